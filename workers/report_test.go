package workers_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/devtemporal"
	"tms/workers"
	"tms/workflows"
)

// reportingRegion is a region's activities as the reporter sees them: a status with the region's
// servers and store, and an eviction that counts itself.
type reportingRegion struct {
	id      string
	servers []activities.ServerStatus
	used    int64
	evicted atomic.Int32
}

func (g *reportingRegion) Status(context.Context, activities.StatusInput) (activities.RegionStatus, error) {
	return activities.RegionStatus{Summary: activities.RegionSummary{Region: g.id, Interval: 200 * time.Millisecond,
		Servers: g.servers, Used: g.used, Capacity: 100, HighWater: 0.9, LowWater: 0.8, At: time.Now()}}, nil
}

func (g *reportingRegion) EvictIfFull(context.Context, activities.EvictInput) (activities.MakeRoomResult, error) {
	g.evicted.Add(1)
	return activities.MakeRoomResult{}, nil
}

// TestRegionReportsFromItsWorker runs region workers on a real Temporal server, with a stand-in
// for central's service workflow that records the reports: a region's worker reports at the
// interval its status names, from one of its servers only, and asks its service workflow to
// evict when its store is above the high-water mark; a stopped worker reports no more.
func TestRegionReportsFromItsWorker(t *testing.T) {
	srv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := client.Dial(client.Options{HostPort: srv.Address()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Central's service workflow, reduced to what it heard.
	var mu sync.Mutex
	heard := map[string]int{}
	central := worker.New(c, activities.CentralQueue, worker.Options{})
	central.RegisterWorkflowWithOptions(func(ctx workflow.Context) error {
		ch := workflow.GetSignalChannel(ctx, workflows.SignalReport)
		for {
			var sum activities.RegionSummary
			ch.Receive(ctx, &sum)
			mu.Lock()
			heard[sum.Region]++
			mu.Unlock()
		}
	}, workflow.RegisterOptions{Name: "CentralService"})
	if err := central.Start(); err != nil {
		t.Fatal(err)
	}
	defer central.Stop()
	ctx := t.Context()
	if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.CentralServiceID, TaskQueue: activities.CentralQueue}, "CentralService"); err != nil {
		t.Fatal(err)
	}

	both := []activities.ServerStatus{{ID: "lab-a", Healthy: true}, {ID: "lab-b", Healthy: true}}
	onlyB := []activities.ServerStatus{{ID: "lab-a"}, {ID: "lab-b", Healthy: true}}
	full := &reportingRegion{id: "region-full", used: 95}
	regions := []struct {
		g      *reportingRegion
		server string
	}{
		{&reportingRegion{id: "region-one"}, ""},
		// Two servers, both healthy: lab-a reports, lab-b does not.
		{&reportingRegion{id: "region-two", servers: both}, "lab-a"},
		{&reportingRegion{id: "region-two", servers: both}, "lab-b"},
		// lab-a stale: lab-b reports.
		{&reportingRegion{id: "region-failover", servers: onlyB}, "lab-b"},
		{full, ""},
	}
	var ws []worker.Worker
	for _, r := range regions {
		w := workers.NewRegionWith(c, workers.RegionWorker{ID: r.g.id, ServerID: r.server, Activities: r.g, ReportInterval: time.Hour})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	time.Sleep(3 * time.Second)
	for _, w := range ws {
		w.Stop()
	}
	mu.Lock()
	got := map[string]int{}
	for k, v := range heard {
		got[k] = v
	}
	mu.Unlock()
	// 3 s at the status's 200 ms: about 15 each (the worker's hour would be one); region-two's
	// from lab-a alone, not twice as many.
	for _, id := range []string{"region-one", "region-two", "region-failover", "region-full"} {
		if got[id] < 5 || got[id] > 20 {
			t.Errorf("region %s: %d reports in 3 s at 200 ms, want 5 to 20 (all heard: %v)", id, got[id], got)
		}
	}
	if full.evicted.Load() == 0 {
		t.Error("a region above its high-water mark did not evict")
	}
	for _, r := range regions[:4] {
		if n := r.g.evicted.Load(); n != 0 {
			t.Errorf("region %s below its high-water mark evicted %d times", r.g.id, n)
		}
	}
	// Stopped: no more reports.
	time.Sleep(time.Second)
	mu.Lock()
	defer mu.Unlock()
	for id, n := range got {
		if heard[id] > n+1 {
			t.Errorf("region %s reported %d times after its worker stopped", id, heard[id]-n)
		}
	}
}
