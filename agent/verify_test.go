package agent_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/agent"
	"tms/agentapi"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/signing"
	"tms/state"
)

// TestDeployVerifiesCentralSignature runs the agent against a real region API (agentapi over
// httptest) that serves a version central signed, through a proxy that changes what the agent
// receives, as a spoofed or compromised region server would. Whatever it changes, by one byte,
// the agent refuses the deploy before writing anything: the disk is unchanged byte for byte.
func TestDeployVerifiesCentralSignature(t *testing.T) {
	ctx := context.Background()
	central, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := state.OpenInventory(ctx, filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	st, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 8<<20, 21)
	id := storetest.Import(t, st, src, "lab").Version.ID
	unsigned := storetest.Import(t, st, storetest.SampleDisk(t, 8<<20, 22), "other").Version.ID
	if err := st.PutSignature(ctx, id, central.SignVersion(id)); err != nil {
		t.Fatal(err)
	}
	api := &agentapi.Server{Inventory: inv, Store: st}
	mux := http.NewServeMux()
	api.Routes(mux)

	// Faults change one response on its way to the agent.
	type fault func(path string, body []byte) []byte
	flipManifest := func(path string, b []byte) []byte {
		if path == "/v1/agent/task/manifest" {
			// A byte of a chunk id: the manifest still decodes, its hash changes.
			i := bytes.Index(b, []byte(`"chunks":["`)) + len(`"chunks":["`) + 5
			b[i] ^= 1
		}
		return b
	}
	editTask := func(edit func(*agentwire.TaskInfo)) fault {
		return func(path string, b []byte) []byte {
			if path != "/v1/agent/task" {
				return b
			}
			var ti agentwire.TaskInfo
			if err := json.Unmarshal(b, &ti); err != nil {
				t.Errorf("task body: %v", err)
				return b
			}
			edit(&ti)
			out, _ := json.Marshal(ti)
			return out
		}
	}
	var current fault
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		if current != nil && rec.Code == http.StatusOK {
			b = current(r.URL.Path, append([]byte(nil), b...))
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(b)
	}))
	defer proxy.Close()
	u, _ := url.Parse(proxy.URL)

	for i, tt := range []struct {
		name    string
		version manifest.ID
		key     *signing.PrivateKey // the agent's copy of central's key; nil: none
		fault   fault
		want    string // in the task's error; "" for a deploy that succeeds
	}{
		{name: "manifest changed by one byte is refused", version: id, key: central, fault: flipManifest, want: "refusing to deploy"},
		{name: "signature changed by one byte is refused", version: id, key: central, fault: editTask(func(ti *agentwire.TaskInfo) { ti.Signature[17] ^= 1 }), want: "does not match"},
		{name: "signer key id changed by one byte is refused", version: id, key: central, fault: editTask(func(ti *agentwire.TaskInfo) {
			c := byte('0')
			if ti.Signer[0] == '0' {
				c = '1'
			}
			ti.Signer = string(c) + ti.Signer[1:]
		}), want: "signed by key"},
		{name: "signature dropped is refused", version: id, key: central, fault: editTask(func(ti *agentwire.TaskInfo) { ti.Signature, ti.Signer = nil, "" }), want: "not signed"},
		{name: "signature of another key is refused", version: id, key: central, fault: editTask(func(ti *agentwire.TaskInfo) {
			s := rogue.SignVersion(id)
			ti.Signature, ti.Signer = s.Signature, s.KeyID
		}), want: "signed by key"},
		{name: "unsigned version is refused", version: unsigned, key: central, want: "not signed"},
		{name: "agent without central's key refuses", version: id, want: "rebuild the boot environment with --central-key"},
		{name: "agent with another central's key refuses", version: id, key: rogue, want: "signed by key"},
		{name: "signed version is deployed", version: id, key: central},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mac := "52:54:00:00:10:" + string("0123456789abcdef"[i/16]) + string("0123456789abcdef"[i%16])
			name := "pc" + string(rune('a'+i))
			task := "deploy/" + name
			if err := inv.Enroll(ctx, mac, name); err != nil {
				t.Fatal(err)
			}
			agentKey, err := inv.IssueAgentKey(ctx, mac)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := inv.StartTask(ctx, state.Task{ID: task, MAC: mac, Kind: "deploy", Version: tt.version.String()}, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := inv.SetBootAction(ctx, mac, state.BootAction{Action: "deploy", Task: task, Version: tt.version.String(), Expires: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			disk := storetest.SampleDisk(t, 8<<20, uint64(100+i))
			before := storetest.FileSum(t, disk)
			current = tt.fault
			a := &agent.Agent{Region: u, MAC: mac, Key: agentKey, Disk: disk, Once: true, Tries: 1, Backoff: time.Millisecond, ProgressEvery: 10 * time.Millisecond}
			if tt.key != nil {
				a.CentralKey = tt.key.Public()
			}
			err = a.Run(ctx)
			got, terr := inv.Task(ctx, task)
			if terr != nil {
				t.Fatal(terr)
			}
			if tt.want == "" {
				if err != nil || got.State != state.TaskDone {
					t.Fatalf("deploy: %v, task %+v", err, got)
				}
				if storetest.FileSum(t, disk) != storetest.FileSum(t, src) {
					t.Fatal("deployed disk differs from the image")
				}
				return
			}
			if err == nil || got.State != state.TaskFailed || !strings.Contains(got.Error, tt.want) {
				t.Fatalf("run: %v; task %s: %q, want failed with %q", err, got.State, got.Error, tt.want)
			}
			if storetest.FileSum(t, disk) != before {
				t.Fatal("the disk was written before the version was verified")
			}
			if fi, err := os.Stat(disk); err != nil || fi.Size() != 8<<20 {
				t.Fatalf("disk size changed: %v", err)
			}
		})
	}
}

// TestAgentTrustsItsCA checks that an agent given RootCAs speaks HTTPS to a region whose
// certificate that CA issued, and that without them it does not.
func TestAgentTrustsItsCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"action":"local"}`))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	disk := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(disk, make([]byte, 4096), 0o644)
	a := &agent.Agent{Region: u, MAC: "52:54:00:00:20:01", Disk: disk, Once: true, RootCAs: roots}
	if err := a.Run(context.Background()); err != nil {
		t.Fatalf("with the region's CA: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var logs bytes.Buffer
	b := &agent.Agent{Region: u, MAC: "52:54:00:00:20:01", Disk: disk, Once: true, Backoff: time.Hour,
		Log: slog.New(slog.NewTextHandler(&logs, nil))}
	b.Run(ctx)
	if !strings.Contains(logs.String(), "certificate") {
		t.Fatalf("without the CA the agent reached the region, or failed otherwise: %s", logs.String())
	}
}
