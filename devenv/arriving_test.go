package devenv_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/devenv"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
	"tms/workflows"
)

// throttle holds bytes moving through it, on every connection together, to rate bytes a second.
type throttle struct {
	mu   sync.Mutex
	rate float64
	next time.Time
}

func (th *throttle) wait(n int) {
	th.mu.Lock()
	now := time.Now()
	if th.next.Before(now) {
		th.next = now
	}
	th.next = th.next.Add(time.Duration(float64(n) / th.rate * float64(time.Second)))
	d := th.next.Sub(now)
	th.mu.Unlock()
	time.Sleep(d)
}

type slowWriter struct {
	http.ResponseWriter
	th *throttle
}

func (w slowWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), 16<<10)]
		w.th.wait(len(piece))
		n, err := w.ResponseWriter.Write(piece)
		written += n
		if err != nil {
			return written, err
		}
		http.NewResponseController(w.ResponseWriter).Flush()
		p = p[n:]
	}
	return written, nil
}

// slowEndpoint puts a loopback proxy moving rate bytes a second in front of region's data
// endpoint, and points central's catalog at it: a share from region is a WAN pull.
func slowEndpoint(t *testing.T, env *devenv.Env, region string, rate float64) {
	t.Helper()
	ctx := context.Background()
	reg, err := env.Central.Catalog.GetRegion(ctx, region)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(reg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	th := &throttle{rate: rate}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxy.ServeHTTP(slowWriter{ResponseWriter: w, th: th}, r)
	}))
	t.Cleanup(srv.Close)
	reg.Endpoint = srv.URL
	if err := env.Central.Catalog.UpsertRegion(ctx, reg); err != nil {
		t.Fatal(err)
	}
}

// span is when a workflow started and closed.
func span(t *testing.T, env *devenv.Env, id string) (time.Time, time.Time) {
	t.Helper()
	d, err := env.Client.DescribeWorkflowExecution(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	info := d.GetWorkflowExecutionInfo()
	return info.GetStartTime().AsTime(), info.GetCloseTime().AsTime()
}

// TestDeployWhileTheImageArrives deploys an image to region-b's classroom while a slow WAN
// pull (a rate-limited proxy in front of region-a) still brings it: the terminals start once
// region-b has the manifest, write each chunk as region-b verifies it, and finish within 1.2 ×
// the share's own time, every disk identical to the captured one.
func TestDeployWhileTheImageArrives(t *testing.T) {
	env := start(t, t.TempDir(), "region-a", "region-b")
	defer env.Stop()
	ctx := context.Background()
	src, _ := env.Terminal("a-pc1")
	want := storetest.FileSum(t, src.Disk)
	cap := capture(t, env, "region-a", "a-pc1", "classroom")
	id, _ := manifest.ParseID(cap.Version)
	st, err := env.Regions["region-a"].Store.GetStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	const shareTime = 12 * time.Second
	rate := float64(st.StoredBytes) / shareTime.Seconds()
	slowEndpoint(t, env, "region-a", rate)
	t.Logf("image: %d stored bytes; WAN pull held to %.0f KB/s", st.StoredBytes, rate/1000)

	run := startDeploy(t, env, workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "classroom"})
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var res workflows.DeployImageResult
	if err := run.Get(wctx, &res); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if res.Share.Path != workflows.PathPeer || res.Failed != 0 || len(res.Terminals) != 3 {
		t.Fatalf("deploy: %+v", res)
	}
	history(t, env, run.GetID(), "deploy")
	for _, tm := range terminalsOf(env, "region-b") {
		if storetest.FileSum(t, tm.Disk) != want {
			t.Errorf("%s differs from the captured disk", tm.Name)
		}
	}
	signed(t, env, "region-b", id)

	shareStart, shareEnd := span(t, env, run.GetID()+"/share")
	var firstStart, lastEnd time.Time
	for _, o := range res.Terminals {
		s, e := span(t, env, run.GetID()+"/"+o.Name)
		if firstStart.IsZero() || s.Before(firstStart) {
			firstStart = s
		}
		if e.After(lastEnd) {
			lastEnd = e
		}
	}
	share, deployed := shareEnd.Sub(shareStart), lastEnd.Sub(shareStart)
	ratio := deployed.Seconds() / share.Seconds()
	t.Logf("share %s; terminals started %s into it and all finished %s after it began: %.2f × the share",
		share.Round(time.Millisecond), firstStart.Sub(shareStart).Round(time.Millisecond), deployed.Round(time.Millisecond), ratio)
	if share < shareTime*8/10 {
		t.Fatalf("the share took %s: the proxy did not slow it to about %s, so this measures nothing", share, shareTime)
	}
	if !firstStart.Before(shareEnd.Add(-share / 2)) {
		t.Errorf("the terminals started %s into a share of %s: not while the image arrived", firstStart.Sub(shareStart), share)
	}
	if ratio > 1.2 {
		t.Errorf("the terminals finished %.2f × the share's time after it began; want ≤ 1.2", ratio)
	}
}

// TestDeployFailsWithTheShareThatBringsIt breaks a chunk of region-a's copy late in the image:
// the deploy to region-b starts its terminals while the (slow) share runs, the share fails at
// that chunk by every path, and the deploy fails with the share's reason; no terminal is left
// with a task.
func TestDeployFailsWithTheShareThatBringsIt(t *testing.T) {
	env := start(t, t.TempDir(), "region-a", "region-b")
	defer env.Stop()
	ctx := context.Background()
	cap := capture(t, env, "region-a", "a-pc1", "classroom")
	id, _ := manifest.ParseID(cap.Version)
	sa := env.Regions["region-a"].OwnStore() // its own directory, under the read-through to its siblings
	v, err := sa.GetManifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var last manifest.ID
	for _, c := range v.Manifest.Chunks {
		if !c.IsZero() {
			last = c
		}
	}
	dir, ok := sa.Backend().(*store.Dir)
	if !ok {
		t.Fatalf("region-a's store is a %T, not a directory", sa.Backend())
	}
	path, off, n, err := dir.ChunkFile(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off+n/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off+n/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, err := sa.GetStats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	slowEndpoint(t, env, "region-a", float64(st.StoredBytes)/6)

	run := startDeploy(t, env, workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "classroom"})
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err = run.Get(wctx, nil)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != string(activities.ErrShareFailed) || !strings.Contains(ae.Message(), "corrupt") {
		t.Fatalf("deploy ended with %v; want the share's failure naming the corrupt chunk", err)
	}
	t.Logf("deploy failed as it should: %s", ae.Message())
	history(t, env, run.GetID(), "deploy")
	// The terminals had started; their tasks were canceled and their boot actions put back.
	started := 0
	for _, tm := range terminalsOf(env, "region-b") {
		if _, err := env.Client.DescribeWorkflowExecution(ctx, run.GetID()+"/"+tm.Name, ""); err == nil {
			started++
		}
		a, err := env.Regions["region-b"].Inventory.BootAction(ctx, tm.MAC, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if a.Action != "local" {
			t.Errorf("%s's boot action after the failed deploy: %+v; want local", tm.Name, a)
		}
	}
	if started == 0 {
		t.Error("no terminal started while the image arrived")
	}
	if ok, err := env.Regions["region-b"].Store.HasVersion(ctx, id); ok || err != nil {
		t.Errorf("region-b publishes the version of a failed share: %v, %v", ok, err)
	}
}
