package bootsvc

import (
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tms/agentapi"
	"tms/agentwire"
	"tms/state"
)

var update = flag.Bool("update", false, "rewrite the golden scripts in testdata")

type fixture struct {
	sc  *Scripts
	inv *state.Inventory
	srv *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	inv, err := state.OpenInventory(context.Background(), filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel bytes"), 0o644)
	os.WriteFile(filepath.Join(dir, "initrd"), []byte("initrd bytes"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("not served"), 0o644)
	f := &fixture{inv: inv}
	f.sc = &Scripts{Inventory: inv, Claims: &agentapi.Server{Inventory: inv}, Endpoint: "http://10.0.5.2:8301", BootDir: dir, Args: "console=ttyS0"}
	mux := http.NewServeMux()
	f.sc.Routes(mux)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// get fetches the script at a URL ScriptURL made (its host is the region's; the test server
// stands in for it).
func (f *fixture) get(t *testing.T, scriptURL string) string {
	t.Helper()
	return f.getFrom(t, "127.0.0.1", scriptURL)
}

// getFrom fetches the script as the machine at ip (an address of 127.0.0.0/8) would.
func (f *fixture) getFrom(t *testing.T, ip, scriptURL string) string {
	t.Helper()
	u, err := url.Parse(scriptURL)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	resp, err := c.Get(f.srv.URL + u.RequestURI())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", u.RequestURI(), resp.Status, b)
	}
	return string(b)
}

var tokenRE = regexp.MustCompile(`tms\.token=[A-Za-z0-9_-]+`)

func golden(t *testing.T, name, got string) {
	t.Helper()
	got = tokenRE.ReplaceAllString(got, "tms.token=TOKEN")
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./bootsvc -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden script:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func (f *fixture) task(t *testing.T, mac, name, id string, kind agentwire.Kind) {
	t.Helper()
	ctx := context.Background()
	if err := f.inv.Enroll(ctx, mac, name); err != nil {
		t.Fatal(err)
	}
	if _, err := f.inv.StartTask(ctx, state.Task{ID: id, MAC: mac, Kind: kind, Image: "lab"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.inv.SetBootAction(ctx, mac, state.BootAction{Action: agentwire.Action(kind), Task: id, Image: "lab", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func hw(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

func TestScriptForUnknownTerminalBootsLocalDisk(t *testing.T) {
	f := newFixture(t)
	u := f.sc.ScriptURL(hw("52:54:00:aa:00:01"))
	if regexp.MustCompile(`[?&]s=`).MatchString(u) {
		t.Fatalf("a terminal without a task got a secret: %s", u)
	}
	golden(t, "local-unknown.ipxe", f.get(t, u))
	term, err := f.inv.Terminal(context.Background(), "52:54:00:aa:00:01")
	if err != nil || term.Enrolled {
		t.Fatalf("an unknown terminal is recorded as seen, not enrolled: %+v, %v", term, err)
	}
	golden(t, "local-bad-mac.ipxe", f.get(t, "http://x/boot/ipxe?mac=nonsense%0Aexit"))
}

func TestScriptForTaskClaimsTheBoot(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const mac = "52:54:00:aa:00:02"
	f.task(t, mac, "pc2", "deploy/r/lab/img/pc2", "deploy")
	// Every PC that asks DHCP with this MAC reads the URL: it holds no secret.
	u := f.sc.ScriptURL(hw(mac))
	if q, _ := url.Parse(u); len(q.Query()) != 1 || q.Query().Get("mac") != mac || q.Host != "10.0.5.2:8301" {
		t.Fatalf("script URL %s", u)
	}
	script := f.getFrom(t, "127.0.0.2", u)
	golden(t, "deploy.ipxe", script)
	tok := tokenRE.FindString(script)[len("tms.token="):]
	a, _ := f.inv.BootAction(ctx, mac, time.Now())
	if _, ok, err := f.inv.CheckClaim(ctx, mac, a.Task, tok, "127.0.0.2", time.Now()); !ok || err != nil {
		t.Fatalf("the token on the kernel command line does not open the task from its address: %v", err)
	}
	// The same terminal booting again gets a new token for the same claim.
	again := tokenRE.FindString(f.getFrom(t, "127.0.0.2", u))[len("tms.token="):]
	if again == tok {
		t.Fatal("a second boot got the same token")
	}
	// Another machine asking for the same terminal's script: the task fails, naming both.
	golden(t, "local-rival.ipxe", f.getFrom(t, "127.0.0.66", u))
	task, _ := f.inv.Task(ctx, a.Task)
	if task.State != state.TaskFailed || !strings.Contains(task.Error, "127.0.0.2 and 127.0.0.66") {
		t.Fatalf("task after a second claimant: %+v", task)
	}
	golden(t, "local-no-task.ipxe", f.getFrom(t, "127.0.0.2", u))
}

func TestBootFiles(t *testing.T) {
	f := newFixture(t)
	for path, want := range map[string]int{
		"/boot/vmlinuz":           http.StatusOK,
		"/boot/initrd":            http.StatusOK,
		"/boot/secret":            http.StatusNotFound,
		"/boot/..%2Fsecret":       http.StatusNotFound,
		"/boot/%2E%2E/etc/passwd": http.StatusNotFound,
	} {
		resp, err := http.Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d (%s)", path, resp.StatusCode, want, b)
		}
		if want == http.StatusOK && len(b) == 0 {
			t.Errorf("GET %s: empty", path)
		}
	}
}

// FuzzScriptRequest sends arbitrary query strings to the script endpoint, as anything on the
// terminals' network can: the answer is always an iPXE script, and the in-memory OS only for
// the one terminal with a task.
func FuzzScriptRequest(f *testing.F) {
	f.Add("mac=52:54:00:aa:00:09")
	f.Add("mac=52:54:00:aa:00:09&s=guess")
	f.Add("mac=%00%0a&s=%0Aexit")
	f.Add("mac=52-54-00-AA-00-09&mac=x")
	f.Add(";;;&&&==")
	inv, err := state.OpenInventory(context.Background(), filepath.Join(f.TempDir(), "inventory.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer inv.Close()
	sc := &Scripts{Inventory: inv, Claims: &agentapi.Server{Inventory: inv}, Endpoint: "http://10.0.5.2:8301"}
	ctx := context.Background()
	inv.Enroll(ctx, "52:54:00:aa:00:09", "pc9")
	inv.StartTask(ctx, state.Task{ID: "deploy/x", MAC: "52:54:00:aa:00:09", Kind: "deploy", Version: "lab"}, time.Now())
	inv.SetBootAction(ctx, "52:54:00:aa:00:09", state.BootAction{Action: "deploy", Task: "deploy/x", Version: "lab", Expires: time.Now().Add(time.Hour)})
	mux := http.NewServeMux()
	sc.Routes(mux)
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest("GET", "/boot/ipxe", nil)
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		body := rec.Body.String()
		if rec.Code != http.StatusOK || len(body) < 6 || body[:6] != "#!ipxe" {
			t.Fatalf("query %q: %d %q", query, rec.Code, body)
		}
		if regexp.MustCompile(`tms\.token=`).MatchString(body) && !strings.Contains(body, "terminal pc9: deploy") {
			t.Fatalf("query %q got a token for a terminal without a task:\n%s", query, body)
		}
	})
}
