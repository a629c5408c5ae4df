package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	siblingpkg "tms/sibling"
	"tms/signing"
	"tms/state"
	"tms/transfer"
)

// sibling is one of a region's servers: its own agent API and store, the region's database.
type sibling struct {
	inv *state.Inventory
	api *agentapi.Server
	srv *httptest.Server
}

// regionSecret is the test region's sibling secret.
var regionSecret = []byte("the region's secret, 32 bytes ok")

// siblingServers starts n agent API servers on one database file, each with its own
// connection and store, as the region's servers are; each names the others to its agents and
// serves them the sibling routes (with regionSecret).
// wrap, if set, wraps server i's handler.
func siblingServers(t *testing.T, n int, wrap ...func(i int, h http.Handler) http.Handler) []*sibling {
	t.Helper()
	db := filepath.Join(t.TempDir(), "inventory.db")
	out := make([]*sibling, n)
	for i := range out {
		inv, err := state.OpenInventory(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inv.Close() })
		st, _ := storetest.Dir(t)
		s := &sibling{inv: inv, api: &agentapi.Server{Inventory: inv, Store: st}}
		mux := http.NewServeMux()
		s.api.Routes(mux)
		(&siblingpkg.Handler{Backend: st.Backend(), Secret: regionSecret, Mailbox: s.api}).Routes(mux)
		var h http.Handler = mux
		for _, w := range wrap {
			h = w(i, h)
		}
		s.srv = httptest.NewUnstartedServer(h)
		out[i] = s
	}
	for i, s := range out {
		var others []string
		for j, o := range out {
			if j != i {
				others = append(others, "http://"+o.srv.Listener.Addr().String())
			}
		}
		s.api.Servers = func(context.Context) ([]string, error) { return others, nil }
		s.srv.Start()
		t.Cleanup(s.srv.Close)
	}
	return out
}

// answer is one server's answer to a boot request.
type answer struct {
	status int
	rep    agentwire.BootReply
	err    agentwire.Error
}

// bootAtOnce sends the same boot request (the same bytes and headers) to every server at once.
func bootAtOnce(t *testing.T, servers []*sibling, body []byte, header http.Header) []answer {
	t.Helper()
	out := make([]answer, len(servers))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, s.srv.URL+"/v1/agent/boot", bytes.NewReader(body))
			req.Header = header.Clone()
			<-start
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			out[i].status = resp.StatusCode
			if resp.StatusCode == http.StatusOK {
				json.Unmarshal(b, &out[i].rep)
			} else {
				json.Unmarshal(b, &out[i].err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// TestTwoServersOneBootClaim: the same terminal's boot request reaching two of the region's
// servers at once — one signed with its agent key, or one carrying the boot token of its
// network boot — gets a task token from exactly one; the other refuses it (a signed request's
// nonce is taken once by the region: a replay; a boot token is exchanged once: already
// answered), and the task goes on. Many rounds, so both orders and true overlaps occur.
func TestTwoServersOneBootClaim(t *testing.T) {
	ctx := context.Background()
	servers := siblingServers(t, 2)
	inv := servers[0].inv
	const mac = "52:54:00:00:0a:01"
	if err := inv.Enroll(ctx, mac, "pc-race"); err != nil {
		t.Fatal(err)
	}
	key, err := inv.IssueAgentKey(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 40
	wins := make([]int, len(servers))
	for round := range rounds {
		id := fmt.Sprintf("capture/race-%d/run", round)
		task := taskOf(id, mac, agentwire.KindCapture, "lab")
		if _, err := inv.StartTask(ctx, task, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := inv.SetBootAction(ctx, mac, bootActionOf(task, time.Now().Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		req := agentwire.BootRequest{MAC: mac, Disk: "disk", DiskSize: 1 << 20}
		header := http.Header{"Content-Type": {"application/json"}}
		how := "signed"
		if round%2 == 1 {
			// A network boot: iPXE claimed it at one server; the agent sends its boot token.
			how = "boot token"
			_, boot, err := servers[round%len(servers)].api.ClaimNetworkBoot(ctx, mac, "127.0.0.1")
			if err != nil || boot == "" {
				t.Fatalf("round %d: network claim: %q %v", round, boot, err)
			}
			req.BootToken = boot
		}
		body, _ := json.Marshal(req)
		if how == "signed" {
			r, _ := http.NewRequest(http.MethodPost, "http://x/v1/agent/boot", bytes.NewReader(body))
			agentwire.SignRequest(r, mac, key, body, time.Now())
			header.Set("Authorization", r.Header.Get("Authorization"))
		}
		got := bootAtOnce(t, servers, body, header)
		won := -1
		for i, a := range got {
			switch {
			case a.status == http.StatusOK && a.rep.Token != "" && a.rep.Task == id:
				if won >= 0 {
					t.Fatalf("round %d (%s): both servers handed out a token: %+v", round, how, got)
				}
				won = i
			case how == "boot token" && a.status == http.StatusConflict && strings.Contains(a.err.Error, "already answered") && !a.err.Retry:
			case how == "signed" && a.status == http.StatusUnauthorized && strings.Contains(a.err.Error, "already made once") && !a.err.Retry:
			default:
				t.Fatalf("round %d (%s): server %d answered %d %+v %+v: want a token or a refusal saying it was answered", round, how, i, a.status, a.rep, a.err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d (%s): no server handed out a token: %+v", round, how, got)
		}
		wins[won]++
		// The winner's token opens the task at either server; the task goes on.
		for _, s := range servers {
			c := &http.Request{Method: http.MethodGet, Header: http.Header{"Authorization": {"Bearer " + got[won].rep.Token}, agentwire.TerminalHeader: {mac}}}
			c.URL, _ = c.URL.Parse(s.srv.URL + "/v1/agent/task")
			resp, err := http.DefaultClient.Do(c)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("round %d (%s): the winner's token at %s: %d", round, how, s.srv.URL, resp.StatusCode)
			}
		}
		if tk, _ := inv.Task(ctx, id); tk.Finished() {
			t.Fatalf("round %d (%s): the refused request failed the task: %+v", round, how, tk)
		}
		if _, _, err := inv.FinishTask(ctx, id, state.TaskCanceled, "", "round over", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("token handed out by server 0 in %d rounds, server 1 in %d", wins[0], wins[1])
}

// TestAgentCarriesOnWithASibling: the server a deploying agent booted from dies with 40% of
// the image sent (every connection cut, nothing answers); the agent turns to the sibling the
// region named, with the same task and token, and finishes: the disk holds the image, the task
// is done, and the agent booted once (no new boot, no starting over).
func TestAgentCarriesOnWithASibling(t *testing.T) {
	ctx := context.Background()
	const mac = "52:54:00:00:0a:02"
	var (
		mu        sync.Mutex
		served    [2]int64
		requests  [2]map[string]int
		threshold int64 = 1 << 62
		dead      bool
	)
	requests[0], requests[1] = map[string]int{}, map[string]int{}
	var servers []*sibling
	kill := func() {
		s := servers[0]
		s.srv.CloseClientConnections()
		s.srv.Listener.Close()
	}
	servers = siblingServers(t, 2, func(i int, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if i == 0 && dead {
				mu.Unlock()
				panic(http.ErrAbortHandler)
			}
			requests[i][r.URL.Path]++
			mu.Unlock()
			h.ServeHTTP(&countWriter{ResponseWriter: w, add: func(n int) bool {
				mu.Lock()
				defer mu.Unlock()
				served[i] += int64(n)
				if i == 0 && !dead && served[0] >= threshold {
					dead = true
					go kill()
				}
				return i == 0 && dead
			}}, r)
		})
	})
	a, b := servers[0], servers[1]
	key, _ := signing.GenerateKey()
	sample := storetest.SampleDisk(t, 32<<20, 11)
	img := storetest.Import(t, a.api.Store, sample, "lab")
	id := img.Version.ID
	if _, err := transfer.Copy(ctx, transfer.StoreSource{S: a.api.Store}, b.api.Store, id, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if err := s.api.Store.PutSignature(ctx, id, key.SignVersion(id)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	threshold = img.Stats.StoredBytes * 4 / 10
	mu.Unlock()

	if err := a.inv.Enroll(ctx, mac, "pc-failover"); err != nil {
		t.Fatal(err)
	}
	agentKey, err := a.inv.IssueAgentKey(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	task := taskOf("deploy/failover/run", mac, agentwire.KindDeploy, id.String())
	if _, err := a.inv.StartTask(ctx, task, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := a.inv.SetBootAction(ctx, mac, bootActionOf(task, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 32<<20); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(a.srv.URL)
	ag := &agent.Agent{Region: u, MAC: mac, Key: agentKey, Disk: disk, CentralKey: key.Public(), Once: true, Tries: 1,
		Backoff: time.Millisecond, ProgressEvery: 20 * time.Millisecond, FailoverAfter: 300 * time.Millisecond, Window: 4 << 20}
	if err := ag.Run(ctx); err != nil {
		t.Fatalf("the agent did not finish after its server died: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !dead {
		t.Fatal("server 0 was never killed: the test did not test anything")
	}
	t.Logf("server 0 sent %d bytes before it died, server 1 %d; requests: %v / %v", served[0], served[1], requests[0], requests[1])
	if requests[1]["/v1/agent/task/frames"] == 0 {
		t.Error("the sibling served no frames")
	}
	if n := requests[0]["/v1/agent/boot"] + requests[1]["/v1/agent/boot"]; n != 1 {
		t.Errorf("the agent booted %d times: it started over instead of carrying on", n)
	}
	if storetest.FileSum(t, disk) != storetest.FileSum(t, sample) {
		t.Error("the disk does not hold the image")
	}
	if tk, _ := b.inv.Task(ctx, task.ID); tk.State != state.TaskDone {
		t.Errorf("task after the deploy: %+v", tk)
	}
}

// countWriter tells add how many bytes each write sent; add true makes the write fail as a
// dead server's would.
type countWriter struct {
	http.ResponseWriter
	add func(n int) bool
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	if w.add(n) {
		panic(http.ErrAbortHandler)
	}
	return n, err
}

func (w *countWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// recordPower is a terminal's power switch that records what it was told.
type recordPower struct {
	mu  sync.Mutex
	got []string
}

func (p *recordPower) Poweroff(context.Context) error { p.add("poweroff"); return nil }
func (p *recordPower) Reboot(context.Context) error   { p.add("reboot"); return nil }
func (p *recordPower) add(s string) {
	p.mu.Lock()
	p.got = append(p.got, s)
	p.mu.Unlock()
}

// TestSiblingPassesACommandOn: a terminal's installed OS polls server 0 for commands; server 1,
// whose worker sends the reboot, has no poll from it and asks its siblings: server 0 passes the
// reboot to the agent, which carries it out. A terminal that polls nobody is not reached, and
// a command request without the region's secret is refused.
func TestSiblingPassesACommandOn(t *testing.T) {
	ctx := context.Background()
	servers := siblingServers(t, 2)
	a := servers[0]
	const mac = "52:54:00:00:0a:03"
	if err := a.inv.Enroll(ctx, mac, "pc-cmd"); err != nil {
		t.Fatal(err)
	}
	key, err := a.inv.IssueAgentKey(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(a.srv.URL)
	power := &recordPower{}
	svc := &agent.Service{Region: u, MAC: mac, Key: key, Power: power, Wait: 2 * time.Second}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	for !a.api.Connected(mac) {
		time.Sleep(10 * time.Millisecond)
	}
	other := &siblingpkg.Fetcher{Siblings: siblingpkg.Static(siblingpkg.Sibling{ID: "0", Endpoint: a.srv.URL}), Secret: regionSecret, From: "1"}
	if ok, err := other.Command(ctx, "52:54:00:00:0a:99", agentwire.CommandReboot); ok || err != nil {
		t.Fatalf("a terminal that polls nobody: delivered %v, %v", ok, err)
	}
	stranger := &siblingpkg.Fetcher{Siblings: other.Siblings, Secret: []byte("another region's secret, 32 b!!"), From: "x"}
	if ok, _ := stranger.Command(ctx, mac, agentwire.CommandReboot); ok {
		t.Fatal("a command request with another secret was passed on")
	}
	if ok, err := other.Command(ctx, mac, agentwire.CommandReboot); !ok || err != nil {
		t.Fatalf("the terminal polling server 0: delivered %v, %v", ok, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not get the reboot")
	}
	power.mu.Lock()
	defer power.mu.Unlock()
	if len(power.got) != 1 || power.got[0] != "reboot" {
		t.Fatalf("the terminal was told %v, want one reboot", power.got)
	}
}
