package agent_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/agent"
	"tms/agentapi"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/state"
)

// switchRecorder is a terminal's power switch that records what it was asked.
type switchRecorder struct {
	mu   sync.Mutex
	did  []string
	fail error
}

func (s *switchRecorder) Poweroff(context.Context) error { return s.record("poweroff") }
func (s *switchRecorder) Reboot(context.Context) error   { return s.record("reboot") }
func (s *switchRecorder) record(what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.did = append(s.did, what)
	return s.fail
}

// serviceRegion is a real region agent API over loopback with one enrolled terminal and its key.
func serviceRegion(t *testing.T) (*agentapi.Server, *url.URL, *state.Inventory, []byte) {
	t.Helper()
	ctx := context.Background()
	inv, err := state.OpenInventory(ctx, filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	if err := inv.Enroll(ctx, "52:54:00:00:00:31", "pc31"); err != nil {
		t.Fatal(err)
	}
	key, err := inv.IssueAgentKey(ctx, "52:54:00:00:00:31")
	if err != nil {
		t.Fatal(err)
	}
	api := &agentapi.Server{Inventory: inv}
	mux := http.NewServeMux()
	api.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return api, u, inv, key
}

func TestServiceObeysPowerCommands(t *testing.T) {
	for _, cmd := range []agentwire.Command{agentwire.CommandPoweroff, agentwire.CommandReboot} {
		t.Run(string(cmd), func(t *testing.T) {
			api, u, inv, key := serviceRegion(t)
			sw := &switchRecorder{}
			s := &agent.Service{Region: u, MAC: "52:54:00:00:00:31", Key: key, Power: sw, Wait: 5 * time.Second}
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- s.Run(context.Background()) }()
			for !api.Connected("52:54:00:00:00:31") {
				time.Sleep(5 * time.Millisecond)
			}
			// The poll shows the terminal is up.
			pc, err := inv.Terminal(context.Background(), "pc31")
			if err != nil || pc.LastSeen.Before(start.Add(-time.Second)) || pc.LastIP != "127.0.0.1" {
				t.Fatalf("the service's poll did not record the terminal as seen: %+v, %v", pc, err)
			}
			api.Send("52:54:00:00:00:31", cmd)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the service did not obey")
			}
			if len(sw.did) != 1 || sw.did[0] != string(cmd) {
				t.Fatalf("switched %v, want %s", sw.did, cmd)
			}
			if _, _, taken, _ := api.Polls("52:54:00:00:00:31"); taken != cmd {
				t.Fatalf("the region did not record the command as taken: %q", taken)
			}
		})
	}
}

func TestServiceRefusals(t *testing.T) {
	_, u, _, key := serviceRegion(t)
	wrong := append([]byte{}, key...)
	wrong[0] ^= 1
	for _, tc := range []struct {
		name string
		s    agent.Service
		want string
	}{
		{"no key", agent.Service{Region: u, MAC: "52:54:00:00:00:31", Power: &switchRecorder{}}, "needs"},
		{"a key the region does not know", agent.Service{Region: u, MAC: "52:54:00:00:00:31", Key: wrong, Power: &switchRecorder{}}, "refuses this terminal's key"},
		{"a terminal not enrolled", agent.Service{Region: u, MAC: "52:54:00:00:00:99", Key: key, Power: &switchRecorder{}}, "refuses this terminal's key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tc.s.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestServiceReportsAFailedPowerSwitch(t *testing.T) {
	api, u, _, key := serviceRegion(t)
	sw := &switchRecorder{fail: errors.New("permission denied")}
	s := &agent.Service{Region: u, MAC: "52:54:00:00:00:31", Key: key, Power: sw, Wait: 5 * time.Second}
	api.Send("52:54:00:00:00:31", agentwire.CommandReboot)
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("error %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key := []byte("0123456789abcdef0123456789abcdef")
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		path string
		want string
	}{
		{"a key written by FormatKey", write("ok", agent.FormatKey(key), 0o600), ""},
		{"a key readable by others", write("open", agent.FormatKey(key), 0o644), "readable by others"},
		{"not base64", write("junk", "not a key!", 0o600), "not base64"},
		{"too short", write("short", agent.FormatKey(key[:8]), 0o600), "at least 16"},
		{"too long", write("long", strings.Repeat("A", agent.MaxKeyFile+10), 0o600), "one line of base64"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := agent.ReadKeyFile(tc.path)
			if tc.want == "" {
				if err != nil || string(got) != string(key) {
					t.Fatalf("%q, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// The standard alphabet, padded, is read too.
	if got, err := agent.ParseKey("AAECAwQFBgcICQoLDA0ODw==\n"); err != nil || len(got) != 16 {
		t.Fatalf("%v, %v", got, err)
	}
}

// TestServiceChecksTheRecordedVersion starts the service on a disk that holds the version the
// region recorded, one whose bytes changed, and one it cannot read: the region keeps the
// version for the first and forgets it for the others.
func TestServiceChecksTheRecordedVersion(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		disk   func(t *testing.T, src string) string
		forget bool
	}{
		{"a disk that holds the version", func(t *testing.T, src string) string { return src }, false},
		{"a disk whose first chunk changed", func(t *testing.T, src string) string {
			f, err := os.OpenFile(src, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("a new boot sector"), 100); err != nil {
				t.Fatal(err)
			}
			return src
		}, true},
		{"a disk that cannot be read", func(t *testing.T, src string) string { return filepath.Join(t.TempDir(), "no-disk") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api, u, inv, key := serviceRegion(t)
			st, _ := storetest.Dir(t)
			api.Store = st
			src := storetest.SampleDisk(t, 8<<20, 7)
			id := storetest.Import(t, st, src, "lab").Version.ID
			if err := inv.SetVersion(ctx, "52:54:00:00:00:31", id); err != nil {
				t.Fatal(err)
			}
			sw := &switchRecorder{}
			s := &agent.Service{Region: u, MAC: "52:54:00:00:00:31", Key: key, Disk: tc.disk(t, src), Power: sw, Wait: 5 * time.Second}
			api.Send("52:54:00:00:00:31", agentwire.CommandReboot) // ends Run after the hello
			if err := s.Run(ctx); err != nil {
				t.Fatal(err)
			}
			pc, err := inv.Terminal(ctx, "pc31")
			if err != nil {
				t.Fatal(err)
			}
			if forgot := pc.Version.IsZero(); forgot != tc.forget {
				t.Fatalf("recorded version after the check: %v (forgotten %v, want %v)", pc.Version, forgot, tc.forget)
			}
			// A forgotten version says why, for terminal ls.
			if tc.forget != strings.Contains(pc.VersionNote, "(the agent service's check at ") {
				t.Fatalf("version note after the check: %q", pc.VersionNote)
			}
		})
	}
}

func TestCheckSamples(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk")
	b := make([]byte, 8192)
	copy(b, "boot sector")
	if err := os.WriteFile(disk, b, 0o600); err != nil {
		t.Fatal(err)
	}
	first := manifest.BLAKE3.Sum(b[:4096])
	rep := agentwire.HelloReply{Version: first.String(), Hash: manifest.BLAKE3, Samples: []agentwire.DiskSample{
		{Index: 0, Offset: 0, Length: 4096, Chunk: first},
		{Index: 1, Offset: 4096, Length: 4096}, // all zero: the zero id
	}}
	if c := agent.CheckSamples(disk, rep); len(c.Mismatch) != 0 || c.Error != "" {
		t.Fatalf("matching disk: %+v", c)
	}
	rep.Samples[1].Chunk = first
	if c := agent.CheckSamples(disk, rep); len(c.Mismatch) != 1 || c.Mismatch[0] != 1 {
		t.Fatalf("a zero chunk that should not be: %+v", c)
	}
	rep.Samples[1] = agentwire.DiskSample{Index: 9, Offset: 1 << 20, Length: 4096}
	if c := agent.CheckSamples(disk, rep); !strings.Contains(c.Error, "reading chunk 9") {
		t.Fatalf("a sample past the disk's end: %+v", c)
	}
}

// TestEnrollTradesATokenForTheKey enrolls a terminal's service with a token from the region:
// the key lands in a mode-600 file the service then runs with; the token is refused the
// second time.
func TestEnrollTradesATokenForTheKey(t *testing.T) {
	ctx := context.Background()
	api, u, inv, _ := serviceRegion(t)
	if err := inv.Enroll(ctx, "52:54:00:00:00:32", "pc32"); err != nil {
		t.Fatal(err)
	}
	token, hash := state.NewEnrollToken()
	if err := inv.AddEnrollToken(ctx, state.EnrollToken{Hash: hash, Expires: time.Now().Add(time.Hour)}, time.Now()); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "agent.key")
	c := &agent.Client{Region: u, MAC: "52:54:00:00:00:32"}
	key, err := agent.Enroll(ctx, c, token, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	if got, err := agent.ReadKeyFile(keyFile); err != nil || string(got) != string(key) {
		t.Fatalf("key file holds %x, %v", got, err)
	}
	sw := &switchRecorder{}
	s := &agent.Service{Region: u, MAC: "52:54:00:00:00:32", Key: key, Power: sw, Wait: 5 * time.Second}
	api.Send("52:54:00:00:00:32", agentwire.CommandPoweroff)
	if err := s.Run(ctx); err != nil || len(sw.did) != 1 {
		t.Fatalf("the service with the enrolled key: %v, %v", sw.did, err)
	}
	if _, err := agent.Enroll(ctx, c, token, keyFile); err == nil || !strings.Contains(err.Error(), "already used this token") {
		t.Fatalf("a second enrollment: %v", err)
	}
	if _, err := agent.Enroll(ctx, &agent.Client{Region: u, MAC: "52:54:00:00:00:33"}, token, keyFile); err == nil || !strings.Contains(err.Error(), "is not enrolled") {
		t.Fatalf("a terminal not enrolled: %v", err)
	}
}
