package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tms/activities"
	"tms/agentwire"
	"tms/devtemporal"
	"tms/imageio"
	"tms/internal/promtest"
	"tms/internal/siblingtest"
	"tms/internal/storetest"
	"tms/server"
	"tms/signing"
	"tms/transfer"
	"tms/workflows"
)

// siblingWorld is Temporal, central and a region of two servers, with simulated terminals.
type siblingWorld struct {
	c      client.Client
	key    *signing.PrivateKey
	region *siblingtest.Region
	terms  *siblingtest.Terminals
	sample string
	disks  []string
	names  []string
	image  *imageio.ImportResult
}

// startSiblingWorld starts it: n terminals with empty disks, the image imported into server 0's
// store (and server 1's too, with both) and registered at central as held by the region.
func startSiblingWorld(t *testing.T, ctx context.Context, n int, both bool, terms *siblingtest.Terminals, wrap func(i int, h http.Handler) http.Handler) *siblingWorld {
	t.Helper()
	srv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c, err := client.Dial(client.Options{HostPort: srv.Address(),
		Logger: tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	central, err := server.StartCentral(ctx, server.CentralOptions{DataDir: t.TempDir(), Key: key, Client: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(central.Stop)
	terms.CentralKey = key.Public()
	t.Cleanup(terms.Stop)
	reg := siblingtest.Start(t, ctx, siblingtest.Options{Region: "lab", Servers: 2, Client: c, CentralKey: key.Public(), Waker: terms, Wrap: wrap})
	w := &siblingWorld{c: c, key: key, region: reg, terms: terms}

	w.sample = storetest.SampleDisk(t, 32<<20, 21)
	a := reg.Servers[0]
	if w.image, err = imageio.Import(ctx, a.Store, w.sample, imageio.ImportOptions{Name: "classroom"}); err != nil {
		t.Fatal(err)
	}
	id := w.image.Version.ID
	info := activities.VersionInfo{Version: id.String(), Name: "classroom", DiskSize: w.image.DiskSize, ChunkSize: w.image.Version.Manifest.ChunkSize,
		StoredBytes: w.image.Stats.StoredBytes, Created: w.image.Version.Manifest.Meta.Created}
	res, err := (&activities.Central{Catalog: activities.StateCatalog{C: central.Catalog}, Key: key}).RegisterVersion(ctx,
		activities.RegisterVersionInput{Info: info, Tag: "latest", Region: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Store.PutSignature(ctx, id, res.Signature); err != nil {
		t.Fatal(err)
	}
	if both {
		b := reg.Servers[1]
		if _, err := transfer.Copy(ctx, transfer.StoreSource{S: a.OwnStore()}, b.OwnStore(), id, transfer.Options{}); err != nil {
			t.Fatal(err)
		}
		if err := b.OwnStore().PutSignature(ctx, id, res.Signature); err != nil {
			t.Fatal(err)
		}
	}
	inv := reg.Inventory()
	for i := range n {
		name := fmt.Sprintf("pc%d", i+1)
		mac := fmt.Sprintf("52:54:00:0b:00:%02x", i+1)
		if err := inv.Enroll(ctx, mac, name); err != nil {
			t.Fatal(err)
		}
		k, err := inv.IssueAgentKey(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		disk := filepath.Join(t.TempDir(), name+".disk")
		if err := os.WriteFile(disk, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(disk, 32<<20); err != nil {
			t.Fatal(err)
		}
		terms.Add(siblingtest.Terminal{MAC: mac, Name: name, Disk: disk, Key: k})
		w.disks, w.names = append(w.disks, disk), append(w.names, name)
	}
	return w
}

// deploy starts the deploy of the image to every terminal.
func (w *siblingWorld) deploy(ctx context.Context, t *testing.T, to workflows.AgentTimeouts) client.WorkflowRun {
	t.Helper()
	tags := workflows.TaskTags{Region: "lab", Kind: workflows.TaskDeploy, Terminals: w.names, Image: "classroom"}
	run, err := w.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.DeployWorkflowID("lab", "", w.names, "classroom"),
		TaskQueue: activities.RegionQueue("lab"), TypedSearchAttributes: tags.StartAttributes()},
		workflows.DeployImage, workflows.DeployImageInput{Region: "lab", Terminals: w.names, Image: "classroom", Timeouts: to})
	if err != nil {
		t.Fatal(err)
	}
	return run
}

// check waits for the deploy and checks every terminal's disk holds the image.
func (w *siblingWorld) check(ctx context.Context, t *testing.T, run client.WorkflowRun) {
	t.Helper()
	var res workflows.DeployImageResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("the deploy failed: %v", err)
	}
	if res.Failed != 0 {
		t.Fatalf("%d terminals failed: %+v", res.Failed, res.Terminals)
	}
	want := storetest.FileSum(t, w.sample)
	for i, d := range w.disks {
		if storetest.FileSum(t, d) != want {
			t.Errorf("%s's disk does not hold the image", w.names[i])
		}
	}
}

// progressWatch follows the progress agents report to a server: each terminal's fraction of
// its disk handled.
type progressWatch struct {
	mu   sync.Mutex
	done map[string]float64 // by MAC
	// agent is how many task requests each server answered.
	agent [2]int
	// slow delays each chunk request.
	slow time.Duration
}

func (p *progressWatch) wrap(i int, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/task") {
			p.mu.Lock()
			p.agent[i]++
			p.mu.Unlock()
		}
		if p.slow > 0 && (r.URL.Path == "/v1/agent/task/frames" || strings.HasPrefix(r.URL.Path, "/v1/agent/task/chunks/")) {
			// The deploy takes seconds, not a blink, so the kill lands where the test wants it.
			time.Sleep(p.slow)
		}
		switch r.URL.Path {
		case "/v1/agent/task/progress":
			b, _ := io.ReadAll(io.LimitReader(r.Body, agentwire.MaxJSON))
			r.Body = io.NopCloser(bytes.NewReader(b))
			var pr agentwire.Progress
			if json.Unmarshal(b, &pr) == nil && pr.Total > 0 {
				f := float64(pr.Done) / float64(pr.Total)
				if pr.Phase == agentwire.PhaseVerifying {
					f = 1
				}
				p.mu.Lock()
				mac := strings.ToLower(r.Header.Get(agentwire.TerminalHeader))
				p.done[mac] = max(p.done[mac], f)
				p.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	})
}

// mean is the terminals' mean fraction done, over n terminals.
func (p *progressWatch) mean(n int) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sum float64
	for _, f := range p.done {
		sum += f
	}
	return sum / float64(n)
}

// TestServerKilledMidDeploy: a region of two servers (one database, a store each, the image in
// both), four terminals whose agents booted from server 0. Server 0 is killed as a crash would
// with 30–50% of the deploy done. The agents carry on with server 1 (the region named it to
// them), the WaitForAgent activities that server 0's worker started are retried by server 1's
// once their heartbeats stop, and the deploy finishes: every disk holds the image.
func TestServerKilledMidDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Temporal, central, two region servers and four agents")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	watch := &progressWatch{done: map[string]float64{}, slow: 30 * time.Millisecond}
	// The agents fail over after 6 s, a terminal's silence is 4 s: the WaitForAgent activities
	// time out on heartbeat while the agents are between servers, and their retries record
	// their task tokens again.
	terms := &siblingtest.Terminals{FailoverAfter: 6 * time.Second, ProgressEvery: 100 * time.Millisecond}
	w := startSiblingWorld(t, ctx, 4, true, terms, watch.wrap)
	terms.Home = w.region.Servers[0].Endpoint()
	run := w.deploy(ctx, t, workflows.AgentTimeouts{Silence: 4 * time.Second, Tries: 5})

	for watch.mean(4) < 0.35 {
		if ctx.Err() != nil {
			t.Fatal("the deploy did not get to 35%")
		}
		time.Sleep(5 * time.Millisecond)
	}
	killedAt := watch.mean(4)
	watch.mu.Lock()
	before := watch.agent
	watch.mu.Unlock()
	w.region.Kill(0)
	t.Logf("server 0 killed with %.0f%% of the deploy done", 100*killedAt)
	if killedAt > 0.5 {
		t.Errorf("server 0 was killed at %.0f%%: the deploy ran past half before the test saw it", 100*killedAt)
	}
	w.check(ctx, t, run)
	watch.mu.Lock()
	defer watch.mu.Unlock()
	t.Logf("task requests before the kill: server 0 %d, server 1 %d; in all: %d, %d", before[0], before[1], watch.agent[0], watch.agent[1])
	if before[1] != 0 {
		t.Errorf("server 1 answered %d task requests before the kill: the agents did not all start on server 0", before[1])
	}
	if watch.agent[1] == 0 {
		t.Error("server 1 answered no task request: the agents did not carry on with it")
	}
	// Every terminal's WaitForAgent timed out on heartbeat while its agent was between servers
	// and was retried; the retry recorded its task token again, which is how the agent's
	// completion reached it.
	for _, name := range w.names {
		if n := waitAttempts(ctx, t, w.c, workflows.DeployWorkflowID("lab", "", w.names, "classroom")+"/"+name); n < 2 {
			t.Errorf("%s's WaitForAgent ran %d time(s): its heartbeat never timed out, so its retry's path was not tested", name, n)
		}
	}
}

// TestServerLendsItsSiblingTheImage: the image is in server 0's store only; the terminals boot
// from server 1, whose store lacks it. Server 1 reads it through from server 0 (manifest
// checked against central's signature, every chunk against its id), serves it, and keeps it.
func TestServerLendsItsSiblingTheImage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Temporal, central, two region servers and two agents")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	terms := &siblingtest.Terminals{ProgressEvery: 300 * time.Millisecond}
	w := startSiblingWorld(t, ctx, 2, false, terms, nil)
	b := w.region.Servers[1]
	terms.Home = b.Endpoint()
	if ok, _ := b.OwnStore().HasVersion(ctx, w.image.Version.ID); ok {
		t.Fatal("server 1 holds the image from the start: the test tests nothing")
	}
	w.check(ctx, t, w.deploy(ctx, t, workflows.AgentTimeouts{}))
	own := b.OwnStore()
	for _, id := range w.image.Version.Manifest.Chunks {
		if id.IsZero() {
			continue
		}
		if ok, err := own.HasChunk(ctx, id); !ok || err != nil {
			t.Fatalf("server 1 did not keep chunk %s: %v %v", id.Short(), ok, err)
		}
	}
	fams := promtest.Scrape(t, b.MetricsURL())
	if n := promtest.Value(fams, "tms_chunks_verified_total", "path", "sibling"); n == 0 {
		t.Error("server 1 counted no chunk taken from its sibling")
	}
}

// waitAttempts is the attempt at which a workflow's WaitForAgent activity ended.
func waitAttempts(ctx context.Context, t *testing.T, c client.Client, id string) int32 {
	t.Helper()
	it := c.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	waits := map[int64]bool{}
	var attempt int32
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == "WaitForAgent" {
			waits[e.GetEventId()] = true
		}
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && waits[a.GetScheduledEventId()] {
			attempt = max(attempt, a.GetAttempt())
		}
	}
	return attempt
}
