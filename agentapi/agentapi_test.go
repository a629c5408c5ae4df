package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	"tms/internal/promtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/metrics"
	"tms/signing"
	"tms/state"
	"tms/store"
)

// waiters records what the API tells the waiting activities.
type waiters struct {
	mu         sync.Mutex
	heartbeats int
	completed  []state.Task
}

func (w *waiters) Heartbeat(ctx context.Context, t state.Task) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.heartbeats++
	return nil
}

func (w *waiters) Complete(ctx context.Context, t state.Task) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.completed = append(w.completed, t)
	return nil
}

type region struct {
	key   *signing.PrivateKey // central's key, which signs the versions deployed
	api   *agentapi.Server
	inv   *state.Inventory
	store *store.Store
	srv   *httptest.Server
	url   *url.URL
	wait  *waiters
	keys  map[string][]byte // agent keys by MAC
	// metrics are the region's series the API counts into.
	metrics *metrics.Region
}

// value reads one of the region's series (-1: absent).
func (r *region) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return promtest.Value(promtest.Gather(t, r.metrics.Registry()), name, labels...)
}

func newRegion(t testing.TB) *region {
	t.Helper()
	inv, err := state.OpenInventory(context.Background(), filepath.Join(t.TempDir(), "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	st, _ := storetest.Dir(t)
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r := &region{key: key, inv: inv, store: st, wait: &waiters{}, keys: map[string][]byte{}, metrics: metrics.NewRegion(metrics.RegionSources{})}
	r.api = &agentapi.Server{Inventory: inv, Store: st, Waiters: r.wait, Metrics: r.metrics}
	mux := http.NewServeMux()
	r.api.Routes(mux)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	r.url, _ = url.Parse(r.srv.URL)
	return r
}

// task sets up a task for terminal mac as the PrepareTask activity does; the version of a
// deploy is signed by the test's central key first.
func (r *region) task(t testing.TB, mac, name, id string, kind agentwire.Kind, image string) {
	t.Helper()
	ctx := context.Background()
	r.enroll(t, mac, name)
	if kind == "deploy" {
		// Central signed the version when it registered it; the agent deploys only signed ones.
		if v, err := manifest.ParseID(image); err == nil {
			if err := r.store.PutSignature(ctx, v, r.key.SignVersion(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := r.inv.StartTask(ctx, taskOf(id, mac, kind, image), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := r.inv.SetBootAction(ctx, mac, bootActionOf(taskOf(id, mac, kind, image), time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
}

// enroll enrolls a terminal and gives it an agent key, as tms dev does for its terminals.
func (r *region) enroll(t testing.TB, mac, name string) {
	t.Helper()
	ctx := context.Background()
	if err := r.inv.Enroll(ctx, mac, name); err != nil {
		t.Fatal(err)
	}
	key, err := r.inv.IssueAgentKey(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	r.keys[mac] = key
}

func (r *region) agent(mac, disk string) *agent.Agent {
	return &agent.Agent{Region: r.url, MAC: mac, Key: r.keys[mac], Disk: disk, CentralKey: r.key.Public(), Once: true, Tries: 1, Backoff: time.Millisecond, ProgressEvery: 10 * time.Millisecond}
}

func (r *region) boot(t testing.TB, mac string) (agentwire.BootReply, *agent.Client) {
	t.Helper()
	c := &agent.Client{Region: r.url, MAC: mac, Key: r.keys[mac]}
	rep, err := c.Boot(context.Background(), agentwire.BootRequest{MAC: mac, DiskSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c.Token, c.Key = rep.Token, nil
	return rep, c
}

func status(err error) int {
	var e *agent.APIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func TestBootOfUnknownTerminalIsLocal(t *testing.T) {
	r := newRegion(t)
	rep, _ := r.boot(t, "52:54:00:00:00:01")
	if rep.Action != "local" || rep.Token != "" {
		t.Fatalf("boot: %+v", rep)
	}
	term, err := r.inv.Terminal(context.Background(), "52:54:00:00:00:01")
	if err != nil || term.Enrolled || term.DiskSize != 0 || term.LastIP != "127.0.0.1" {
		t.Fatalf("terminal after boot: %+v, %v", term, err)
	}
	c := &agent.Client{Region: r.url}
	if _, err := c.Boot(context.Background(), agentwire.BootRequest{MAC: "not-a-mac"}); status(err) != http.StatusBadRequest {
		t.Fatalf("bad MAC: %v", err)
	}
}

func TestCaptureThenDeploy(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	src := storetest.SampleDisk(t, 8<<20, 4)
	r.task(t, "52:54:00:00:00:01", "pc1", "capture/1", "capture", "lab")
	if err := r.agent("52:54:00:00:00:01", src).Run(ctx); err != nil {
		t.Fatal(err)
	}
	task, err := r.inv.Task(ctx, "capture/1")
	if err != nil || task.State != state.TaskDone {
		t.Fatalf("capture task: %+v, %v", task, err)
	}
	var res agentwire.Result
	json.Unmarshal([]byte(task.Result), &res)
	// The region keeps the version but moves no tag: the capture workflow tags it once the task
	// is done.
	if _, err := r.store.GetTag(ctx, "lab", "latest"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the agent API tagged a capture: %v", err)
	}
	id, err := manifest.ParseID(res.Version)
	if err != nil || res.DiskSize != 8<<20 || res.StoredBytes == 0 {
		t.Fatalf("result %+v, %v", res, err)
	}
	if err := r.store.SetTag(ctx, "lab", "latest", id); err != nil {
		t.Fatal(err)
	}
	if len(r.wait.completed) != 1 {
		t.Fatalf("completed %d waiters, want 1", len(r.wait.completed))
	}
	v, err := r.store.GetManifest(ctx, id)
	if err != nil || v.Manifest.Meta.Source != "capture:pc1" || v.Manifest.Meta.Partitions == nil {
		t.Fatalf("captured manifest: %+v, %v", v, err)
	}

	// A second capture of the same disk publishes nothing new and uploads nothing.
	r.task(t, "52:54:00:00:00:01", "pc1", "capture/2", "capture", "lab")
	if err := r.agent("52:54:00:00:00:01", src).Run(ctx); err != nil {
		t.Fatal(err)
	}
	task, _ = r.inv.Task(ctx, "capture/2")
	json.Unmarshal([]byte(task.Result), &res)
	if task.State != state.TaskDone || res.Version != id.String() {
		t.Fatalf("recapture: %+v", task)
	}

	// Deploy to a blank disk of the same size, then again (everything skipped).
	dst := filepath.Join(t.TempDir(), "pc2.raw")
	os.WriteFile(dst, nil, 0o644)
	os.Truncate(dst, 8<<20)
	for i, wantWritten := range []bool{true, false} {
		tid := "deploy/" + string(rune('a'+i))
		r.task(t, "52:54:00:00:00:02", "pc2", tid, "deploy", id.String())
		if err := r.agent("52:54:00:00:00:02", dst).Run(ctx); err != nil {
			t.Fatal(err)
		}
		task, _ := r.inv.Task(ctx, tid)
		var res agentwire.Result
		json.Unmarshal([]byte(task.Result), &res)
		if task.State != state.TaskDone || !res.Verified || (res.Written > 0) != wantWritten {
			t.Fatalf("deploy %d: %+v %+v", i, task, res)
		}
	}
	if storetest.FileSum(t, src) != storetest.FileSum(t, dst) {
		t.Fatal("deployed disk differs from the captured one")
	}
	// The capture's chunks came in checked, the deploy's went out; none was refused.
	stored, _ := r.store.GetStats(ctx, id)
	if got := r.value(t, "tms_transfer_bytes_total", "path", "agent", "direction", "in"); got != float64(stored.AddedBytes) || got == 0 {
		t.Errorf("agent bytes in = %v, the capture stored %d", got, stored.AddedBytes)
	}
	distinct := map[manifest.ID]bool{}
	for _, c := range v.Manifest.Chunks {
		if !c.IsZero() {
			distinct[c] = true
		}
	}
	if got := r.value(t, "tms_chunks_verified_total", "path", "agent"); got != float64(len(distinct)) || got == 0 {
		t.Errorf("agent chunks verified = %v, the capture's version has %d", got, len(distinct))
	}
	if got := r.value(t, "tms_transfer_bytes_total", "path", "agent", "direction", "out"); got <= 0 {
		t.Errorf("agent bytes out = %v after a deploy", got)
	}
	if got := r.value(t, "tms_chunks_refused_total"); got != 0 {
		t.Errorf("refused %v chunks of a clean capture", got)
	}
}

func TestDeployRefusesSmallDisk(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	res := storetest.Import(t, r.store, storetest.SampleDisk(t, 8<<20, 5), "lab")
	small := filepath.Join(t.TempDir(), "small.raw")
	os.WriteFile(small, make([]byte, 4<<20), 0o644)
	r.task(t, "52:54:00:00:00:03", "pc3", "deploy/x", "deploy", res.Version.ID.String())
	if err := r.agent("52:54:00:00:00:03", small).Run(ctx); err == nil {
		t.Fatal("deploy to a small disk succeeded")
	}
	task, _ := r.inv.Task(ctx, "deploy/x")
	if task.State != state.TaskFailed || !strings.Contains(task.Error, "needs") {
		t.Fatalf("task %+v", task)
	}
	if fi, _ := os.Stat(small); fi.Size() != 4<<20 {
		t.Fatalf("small disk resized to %d", fi.Size())
	}
}

func TestTokensOpenOnlyTheirTask(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	res := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 6), "lab")
	other := storetest.Import(t, r.store, storetest.SampleDisk(t, 4<<20, 7), "other")
	r.task(t, "52:54:00:00:00:04", "pc4", "deploy/4", "deploy", res.Version.ID.String())
	r.task(t, "52:54:00:00:00:05", "pc5", "deploy/5", "deploy", res.Version.ID.String())
	_, c := r.boot(t, "52:54:00:00:00:04")
	if _, err := c.Task(ctx); err != nil {
		t.Fatal(err)
	}
	// A new boot mints a new token; the old one stops working.
	r.boot(t, "52:54:00:00:00:04")
	if _, err := c.Task(ctx); status(err) != http.StatusForbidden {
		t.Fatalf("old token: %v", err)
	}
	// From another address it means two machines: the task fails.
	c.HTTP = from("127.0.0.44")
	if _, err := c.Task(ctx); status(err) != http.StatusConflict || !strings.Contains(err.Error(), "two machines") {
		t.Fatalf("old token from another address: %v", err)
	}
	if task, _ := r.inv.Task(ctx, "deploy/4"); task.State != state.TaskFailed || !strings.Contains(task.Error, "two machines") {
		t.Fatalf("task after a replaced token came back from another address: %+v", task)
	}
	r.task(t, "52:54:00:00:00:06", "pc6", "deploy/6", "deploy", res.Version.ID.String())
	_, c2 := r.boot(t, "52:54:00:00:00:06")
	// The token with another terminal's MAC opens nothing.
	spoof := &agent.Client{Region: r.url, MAC: "52:54:00:00:00:05", Token: c2.Token}
	if _, err := spoof.Task(ctx); status(err) != http.StatusForbidden {
		t.Fatalf("spoofed MAC: %v", err)
	}
	// No token at all.
	req, _ := http.NewRequest("GET", r.srv.URL+"/v1/agent/task", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v %v", resp, err)
	}
	// Chunks of another version are not served.
	var oc manifest.ID
	for _, id := range other.Version.Manifest.Chunks {
		if !id.IsZero() {
			oc = id
			break
		}
	}
	if _, err := c2.GetChunkFrame(ctx, oc); status(err) != http.StatusNotFound {
		t.Fatalf("foreign chunk: %v", err)
	}
	// A deploy uploads nothing.
	if _, err := c2.Missing(ctx, []manifest.ID{oc}); status(err) != http.StatusForbidden {
		t.Fatalf("missing on a deploy: %v", err)
	}
	// An unverified deploy is a failure; a finished task opens nothing more.
	if _, err := c2.Done(ctx, agentwire.Done{Written: 1}); err != nil {
		t.Fatal(err)
	}
	if task, _ := r.inv.Task(ctx, "deploy/6"); task.State != state.TaskFailed || !strings.Contains(task.Error, "did not verify") {
		t.Fatalf("unverified deploy: %+v", task)
	}
	if _, err := c2.Task(ctx); status(err) != http.StatusForbidden && status(err) != http.StatusConflict {
		t.Fatalf("finished task: %v", err)
	}
	if rep, _ := r.boot(t, "52:54:00:00:00:06"); rep.Action != "local" {
		t.Fatalf("boot after the task ended: %+v", rep)
	}
}

func TestUploadChecksChunksAndPublishNeedsThem(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	r.task(t, "52:54:00:00:00:06", "pc6", "capture/6", "capture", "lab")
	_, c := r.boot(t, "52:54:00:00:00:06")
	ti, err := c.Task(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("tms"), int(ti.ChunkSize/3)+1)[:ti.ChunkSize]
	id := ti.Hash.Sum(data)
	frame := store.NewCodec(0).Compress(nil, data)
	bad := append([]byte(nil), frame...)
	bad[len(bad)/2] ^= 0xff
	wrong := ti.Hash.Sum([]byte("something else"))

	for name, body := range map[string][]byte{
		"corrupt frame":    agentwire.AppendBatch(nil, id, bad),
		"id of other data": agentwire.AppendBatch(nil, wrong, frame),
		"cut short":        agentwire.AppendBatch(nil, id, frame)[:100],
	} {
		if err := c.Upload(ctx, body); status(err) != http.StatusBadRequest {
			t.Errorf("%s: %v", name, err)
		}
	}
	if ok, _ := r.store.HasChunk(ctx, id); ok {
		t.Fatal("a refused chunk was stored")
	}
	// Two chunks were refused (the cut batch holds none whole), the one of other data for its
	// hash; a flipped byte may break the frame or only its content.
	if got := r.value(t, "tms_chunks_refused_total", "path", "agent"); got != 2 {
		t.Errorf("agent chunks refused = %v, want 2", got)
	}
	if got := r.value(t, "tms_chunks_refused_total", "path", "agent", "reason", "hash_mismatch"); got < 1 {
		t.Errorf("agent chunks refused for their hash = %v, want at least 1", got)
	}
	if got := r.value(t, "tms_chunks_verified_total", "path", "agent"); got != 0 {
		t.Errorf("agent chunks verified = %v before any good one came", got)
	}
	m := &manifest.Manifest{Format: manifest.Format, Hash: ti.Hash, DiskSize: 1 << 20, ChunkSize: ti.ChunkSize,
		Meta: manifest.Meta{Name: "lab", Created: time.Now().UTC().Truncate(time.Second)}, Chunks: make([]manifest.ID, manifest.NumChunks(1<<20, ti.ChunkSize))}
	m.Chunks[0] = id
	enc, _ := manifest.Encode(m)
	_, err = c.Publish(ctx, enc)
	var e *agent.APIError
	if !errors.As(err, &e) || e.Status != http.StatusConflict || !e.Retry {
		t.Fatalf("publish before upload: %v", err)
	}
	if missing, err := c.Missing(ctx, []manifest.ID{id, {}}); err != nil || len(missing) != 1 || missing[0] != id {
		t.Fatalf("missing: %v, %v", missing, err)
	}
	if err := c.Upload(ctx, agentwire.AppendBatch(nil, id, frame)); err != nil {
		t.Fatal(err)
	}
	if got := r.value(t, "tms_chunks_verified_total", "path", "agent"); got != 1 {
		t.Errorf("agent chunks verified = %v, want 1", got)
	}
	m.Meta.Name = "other"
	enc, _ = manifest.Encode(m)
	if _, err := c.Publish(ctx, enc); status(err) != http.StatusBadRequest {
		t.Fatalf("publish under another name: %v", err)
	}
	m.Meta.Name = "lab"
	enc, _ = manifest.Encode(m)
	res, err := c.Publish(ctx, enc)
	if err != nil || res.Version == "" {
		t.Fatalf("publish: %+v, %v", res, err)
	}
	if err := c.Progress(ctx, agentwire.Progress{Phase: "uploading", Done: 2, Total: 1}); status(err) == 0 {
		t.Fatalf("progress after the end: %v", err)
	}
}

func TestProgressIsChecked(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	r.task(t, "52:54:00:00:00:07", "pc7", "capture/7", "capture", "lab")
	_, c := r.boot(t, "52:54:00:00:00:07")
	if err := c.Progress(ctx, agentwire.Progress{Phase: "reading", Done: 2, Total: 1}); status(err) != http.StatusBadRequest {
		t.Fatalf("done > total: %v", err)
	}
	if err := c.Progress(ctx, agentwire.Progress{Phase: "dancing", Done: 0, Total: 1}); status(err) != http.StatusBadRequest {
		t.Fatalf("unknown phase: %v", err)
	}
	if err := c.Progress(ctx, agentwire.Progress{Phase: "reading", Done: 1, Total: 2}); err != nil {
		t.Fatal(err)
	}
	task, _ := r.inv.Task(ctx, "capture/7")
	if task.State != state.TaskRunning || !strings.Contains(task.Progress, `"done":1`) || r.wait.heartbeats != 1 {
		t.Fatalf("task after progress: %+v (heartbeats %d)", task, r.wait.heartbeats)
	}
	if _, err := c.Done(ctx, agentwire.Done{}); status(err) != http.StatusBadRequest {
		t.Fatalf("a capture ending without a manifest: %v", err)
	}
	if _, err := c.Done(ctx, agentwire.Done{Error: "disk on fire"}); err != nil {
		t.Fatal(err)
	}
	if task, _ := r.inv.Task(ctx, "capture/7"); task.State != state.TaskFailed || !strings.Contains(task.Error, "disk on fire") {
		t.Fatalf("failed capture: %+v", task)
	}
}

func TestCommands(t *testing.T) {
	r := newRegion(t)
	ctx := context.Background()
	r.enroll(t, "52:54:00:00:00:08", "pc8")
	c := &agent.Client{Region: r.url, MAC: "52:54:00:00:00:08", Key: r.keys["52:54:00:00:00:08"]}
	if last, polling, taken, _ := r.api.Polls("52:54:00:00:00:08"); !last.IsZero() || polling || taken != "" {
		t.Fatalf("a terminal never polled for: last %v, polling %v, taken %q", last, polling, taken)
	}
	before := time.Now()
	if cmd, err := c.Command(ctx, "0s"); err != nil || cmd != "" {
		t.Fatalf("idle poll: %q, %v", cmd, err)
	}
	if last, polling, taken, _ := r.api.Polls("52:54:00:00:00:08"); last.Before(before) || polling || taken != "" {
		t.Fatalf("after an idle poll: last %v, polling %v, taken %q", last, polling, taken)
	}
	got := make(chan agentwire.Command, 1)
	go func() {
		cmd, _ := c.Command(ctx, "10s")
		got <- cmd
	}()
	for !r.api.Connected("52:54:00:00:00:08") {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	r.api.Send("52:54:00:00:00:08", "reboot")
	select {
	case cmd := <-got:
		if cmd != "reboot" {
			t.Fatalf("command %q", cmd)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not get the command")
	}
	// The poll that took the command is the acknowledgement power commands wait for.
	if _, _, taken, at := r.api.Polls("52:54:00:00:00:08"); taken != "reboot" || at.Before(before) {
		t.Fatalf("taken command not recorded: %q at %v", taken, at)
	}
	// A command sent while nobody polls waits for the next poll, but not for ever.
	r.api.Send("52:54:00:00:00:08", "poweroff")
	if cmd, _ := c.Command(ctx, "0s"); cmd != "poweroff" {
		t.Fatalf("queued command: %q", cmd)
	}
	now := time.Now()
	r.api.Now = func() time.Time { return now }
	r.api.Send("52:54:00:00:00:08", "reboot")
	r.api.Now = func() time.Time { return now.Add(agentapi.CommandTTL + time.Second) }
	if cmd, _ := c.Command(ctx, "0s"); cmd != "" {
		t.Fatalf("stale command delivered: %q", cmd)
	}
	if _, _, taken, _ := r.api.Polls("52:54:00:00:00:08"); taken != "poweroff" {
		t.Fatalf("a stale command counted as taken: %q", taken)
	}
	if _, err := (&agent.Client{Region: r.url, MAC: "nope", Key: c.Key}).Command(ctx, "0s"); status(err) != http.StatusUnauthorized {
		t.Fatalf("bad MAC: %v", err)
	}
}

// taskOf is a task of kind on image: an image name for a capture, a version id for a deploy.
func taskOf(id, mac string, kind agentwire.Kind, image string) state.Task {
	t := state.Task{ID: id, MAC: mac, Kind: kind}
	if kind == agentwire.KindDeploy || kind == agentwire.KindProbe {
		t.Version = image
	} else {
		t.Image = image
	}
	return t
}

// bootActionOf is the boot action that runs t.
func bootActionOf(t state.Task, expires time.Time) state.BootAction {
	return state.BootAction{Action: agentwire.Action(t.Kind), Task: t.ID, Image: t.Image, Version: t.Version, Expires: expires}
}

func TestEnrollNeedsHTTPSOffLoopback(t *testing.T) {
	r := newRegion(t)
	mux := http.NewServeMux()
	r.api.Routes(mux)
	for _, tc := range []struct {
		remote string
		want   int
	}{
		{"10.0.5.20:40000", http.StatusForbidden},
		{"127.0.0.1:40000", http.StatusForbidden}, // gets past the transport check; the token is refused
	} {
		req := httptest.NewRequest("POST", "/v1/agent/enroll", strings.NewReader(`{"mac":"52:54:00:00:00:01","token":"tms-enroll-x"}`))
		req.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.remote, w.Code, tc.want, w.Body)
		}
		if tc.remote[0] == '1' && tc.remote[1] == '0' && !strings.Contains(w.Body.String(), "HTTPS") {
			t.Errorf("%s: %s", tc.remote, w.Body)
		}
		if tc.remote[0] == '1' && tc.remote[1] == '2' && !strings.Contains(w.Body.String(), "no such token") {
			t.Errorf("%s: %s", tc.remote, w.Body)
		}
	}
}
