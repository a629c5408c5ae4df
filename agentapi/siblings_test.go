package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/agentapi"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/state"
)

// sibling is one of a region's servers: its own agent API and store, the region's database.
type sibling struct {
	inv *state.Inventory
	api *agentapi.Server
	srv *httptest.Server
}

// siblingServers starts n agent API servers on one database file, each with its own
// connection and store, as the region's servers are.
func siblingServers(t *testing.T, n int) []*sibling {
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
		s.srv = httptest.NewServer(mux)
		t.Cleanup(s.srv.Close)
		out[i] = s
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
// network boot — gets a task token from exactly one; the other refuses it, saying it was
// answered already, and the task goes on. Many rounds, so both orders and true overlaps occur.
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
			case a.status == http.StatusConflict && strings.Contains(a.err.Error, "already answered") && !a.err.Retry:
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
