package agentapi_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/agent"
	"tms/agentwire"
	"tms/arrival"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/state"
	"tms/store"
	"tms/swarm"
	"tms/transfer"
)

// arriving is a version on its way into a test region: a relay holding its signature and
// staged manifest and, as the test adds them, its chunks; and the region's pull from it.
type arriving struct {
	src, relay *store.Store
	v          *store.Version
	chunks     []manifest.ID // distinct, in order
	disk       string
	pulled     chan error
}

// startArriving imports a sample disk in a source store, stages it in a relay with its first
// `first` chunks and starts the region's pull from the relay (activities.PullFromRelay, as a
// share runs it), with r.api's arrivals registry.
func startArriving(t *testing.T, r *region, first int) *arriving {
	t.Helper()
	ctx := context.Background()
	a := &arriving{pulled: make(chan error, 1)}
	a.src, _ = storetest.Dir(t)
	a.relay, _ = storetest.Dir(t)
	a.disk = storetest.SampleDisk(t, 8<<20, 6)
	a.v = storetest.Import(t, a.src, a.disk, "lab").Version
	a.chunks = swarm.Chunks(a.v.Manifest)
	if err := a.relay.PutSignature(ctx, a.v.ID, r.key.SignVersion(a.v.ID)); err != nil {
		t.Fatal(err)
	}
	if err := transfer.Stage(ctx, a.relay, a.v, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range a.chunks[:first] {
		a.add(t, c)
	}
	r.api.Arrivals = &arrival.Registry{}
	a.pull(t, r)
	return a
}

// pull starts the region's pull from the relay (activities.PullFromRelay, as a share runs it)
// and waits until it announces the version.
func (a *arriving) pull(t *testing.T, r *region) {
	t.Helper()
	reg := &activities.Region{ID: "region-b", Store: r.store, Relay: a.relay, CentralKey: r.key.Public(), Arrivals: r.api.Arrivals}
	go func() {
		_, err := reg.PullFromRelay(context.Background(), activities.RelayInput{Version: a.v.ID.String()})
		a.pulled <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for r.api.Arrivals.Running(a.v.ID) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the pull did not announce the version")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// add puts chunk c in the relay, with another chunk's bytes if bad.
func (a *arriving) add(t *testing.T, c manifest.ID) {
	t.Helper()
	f, err := a.src.Backend().Get(context.Background(), store.ChunkKey(c))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.relay.Backend().Put(context.Background(), store.ChunkKey(c), f); err != nil {
		t.Fatal(err)
	}
}

func blankDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentsDeployAVersionWhileItArrives runs two real agents (a swarm) on a version the region
// is still pulling: they read its manifest and signature at once, the tracker never sends them
// to the region for a chunk it lacks, and each chunk reaches them once it arrives; the last
// chunks are held back until both agents have reported writing, so they can only finish by
// being served while the version arrives. Every disk ends identical to the source.
func TestAgentsDeployAVersionWhileItArrives(t *testing.T) {
	ctx := context.Background()
	r := newRegion(t)
	r.api.Swarm = swarm.NewTracker(swarm.Options{})
	a := startArriving(t, r, 3)
	id := a.v.ID.String()
	macs := []string{"52:54:00:00:40:01", "52:54:00:00:40:02"}
	for i, mac := range macs {
		r.task(t, mac, "pc"+string(rune('a'+i)), "deploy/"+mac, "deploy", id)
	}

	// The tracker assigns from the region only chunks the region has.
	arr := r.api.Arrivals.Running(a.v.ID)
	_, c := r.boot(t, macs[0])
	rep, err := c.Swarm(ctx, agentwire.SwarmRequest{Port: 7000, Key: make([]byte, 32), Have: swarm.NewBitmap(len(a.chunks)), Want: agentwire.MaxSwarmWant})
	if err != nil {
		t.Fatal(err)
	}
	for _, as := range rep.Assign {
		if as.Peer == "" && !arr.HasIndex(as.Chunk) {
			t.Fatalf("the tracker sent a member to the region for chunk %d, which has not arrived", as.Chunk)
		}
	}
	if _, err := c.Done(ctx, agentwire.Done{Error: "make way for the real agent"}); err != nil {
		t.Fatal(err)
	}
	r.task(t, macs[0], "pca", "deploy/"+macs[0]+"/2", "deploy", id)

	disks := make([]string, len(macs))
	errs := make(chan error, len(macs))
	for i, mac := range macs {
		disks[i] = blankDisk(t, 8<<20)
		ag := r.agent(mac, disks[i])
		ag.PeerListen = "127.0.0.1:0"
		go func() { errs <- ag.Run(ctx) }()
	}
	// Trickle in all but the last chunks, then wait until both agents are writing.
	held := a.chunks[len(a.chunks)-2:]
	for _, c := range a.chunks[3 : len(a.chunks)-2] {
		a.add(t, c)
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.wait.mu.Lock()
		beats := r.wait.heartbeats
		r.wait.mu.Unlock()
		if beats >= 2*len(macs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agents did not start writing an arriving version (%d progress reports)", beats)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-a.pulled:
		t.Fatalf("the pull ended before its last chunks were in the relay: %v", err)
	default:
	}
	for _, c := range held {
		a.add(t, c)
	}
	for range macs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-a.pulled; err != nil {
		t.Fatal(err)
	}
	want := storetest.FileSum(t, a.disk)
	for i, d := range disks {
		if storetest.FileSum(t, d) != want {
			t.Errorf("disk %d differs from the source", i)
		}
		task, err := r.inv.Task(ctx, "deploy/"+macs[i]+map[bool]string{true: "/2"}[i == 0])
		if err != nil || task.State != state.TaskDone {
			t.Errorf("task of %s: %+v, %v", macs[i], task, err)
		}
	}
}

// TestAgentWaitsPastAFailedCopy: the region's pull of the version an agent writes fails (a
// chunk in the relay does not match its id). The region tells a request for a missing chunk
// why, as a retryable 503, and the agent waits on: when the share brings the version another
// way (a new pull), the agent finishes, its disk identical to the source, nothing unverified
// written.
func TestAgentWaitsPastAFailedCopy(t *testing.T) {
	ctx := context.Background()
	r := newRegion(t)
	r.api.ArrivalWait = 200 * time.Millisecond
	a := startArriving(t, r, 2)
	mac := "52:54:00:00:41:01"
	r.task(t, mac, "pc1", "deploy/1", "deploy", a.v.ID.String())
	disk := blankDisk(t, 8<<20)
	done := make(chan error, 1)
	go func() { done <- r.agent(mac, disk).Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.wait.mu.Lock()
		beats := r.wait.heartbeats
		r.wait.mu.Unlock()
		if beats > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not start on the arriving version")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The third chunk arrives with the fourth's bytes.
	f, err := a.src.Backend().Get(ctx, store.ChunkKey(a.chunks[3]))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.relay.Backend().Put(ctx, store.ChunkKey(a.chunks[2]), f); err != nil {
		t.Fatal(err)
	}
	if err := <-a.pulled; !errors.Is(err, transfer.ErrSourceCorrupt) {
		t.Fatalf("pull: %v; want a corrupt source", err)
	}
	// A request for a missing chunk learns why, and may ask again.
	r.task(t, "52:54:00:00:41:02", "pc2", "deploy/2", "deploy", a.v.ID.String())
	_, c := r.boot(t, "52:54:00:00:41:02")
	_, err = c.GetChunkFrame(ctx, a.chunks[len(a.chunks)-1])
	var api *agent.APIError
	if !errors.As(err, &api) || api.Status != http.StatusServiceUnavailable || !api.Retry || !strings.Contains(api.Msg, "corrupt") {
		t.Fatalf("a chunk of a version whose copy failed: %v; want a retryable 503 naming why", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the agent gave up while the share could still bring the version: %v", err)
	case <-time.After(time.Second):
	}
	// The share brings it another way.
	a.add(t, a.chunks[2])
	for _, c := range a.chunks[3:] {
		a.add(t, c)
	}
	a.pull(t, r)
	if err := <-a.pulled; err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	task, err := r.inv.Task(ctx, "deploy/1")
	if err != nil || task.State != state.TaskDone {
		t.Fatalf("task %+v, %v", task, err)
	}
	if storetest.FileSum(t, disk) != storetest.FileSum(t, a.disk) {
		t.Fatal("the disk differs from the source")
	}
}

// TestAgentAsksAgainForChunksStillArriving: a lone agent (no swarm) asks for chunks in order;
// the region waits a short while for each (ArrivalWait) and answers 503 when it has not come,
// and the agent asks again until it has, so a slow share never fails the task.
func TestAgentAsksAgainForChunksStillArriving(t *testing.T) {
	ctx := context.Background()
	r := newRegion(t)
	r.api.ArrivalWait = 50 * time.Millisecond
	a := startArriving(t, r, 1)
	mac := "52:54:00:00:42:01"
	r.task(t, mac, "pc1", "deploy/1", "deploy", a.v.ID.String())
	disk := blankDisk(t, 8<<20)
	done := make(chan error, 1)
	go func() { done <- r.agent(mac, disk).Run(ctx) }()
	for _, c := range a.chunks[1:] {
		time.Sleep(150 * time.Millisecond) // 3 × the region's wait: every chunk is asked for again
		a.add(t, c)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-a.pulled; err != nil {
		t.Fatal(err)
	}
	task, err := r.inv.Task(ctx, "deploy/1")
	if err != nil || task.State != state.TaskDone {
		t.Fatalf("task %+v, %v", task, err)
	}
	if storetest.FileSum(t, disk) != storetest.FileSum(t, a.disk) {
		t.Fatal("the disk differs from the source")
	}
}
