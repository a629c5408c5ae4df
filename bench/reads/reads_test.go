// Package reads measures how the tms command line reads a region's inventory: a "read" Workflow
// Update on the region's long-lived service workflow (what tms does) against a workflow started
// per read (what tms did before, RegionAdmin; the baseline, timed in the same run), and the
// "status" query of central's service workflow that tms status makes. Each read lists the
// terminals of a region with 30 of them, on the embedded Temporal server, in one process. It also
// counts what a read leaves behind: history events in the service workflow, workflows in the
// Temporal UI's list. Run it with scripts/bench reads.
package reads

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devenv"
	"tms/workflows"
)

const reads = 50

func BenchmarkReads(b *testing.B) {
	dir, err := os.MkdirTemp(os.Getenv("TMS_BENCH_DIR"), "tms-bench-reads-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: []string{"region-a"}, Terminals: 30})
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	c := env.Client
	in := activities.AdminInput{Op: activities.OpTerminals}
	update := func() error {
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: workflows.RegionServiceID("region-a"),
			UpdateName: workflows.UpdateRead, Args: []any{in}, WaitForStage: client.WorkflowUpdateStageCompleted})
		if err != nil {
			return err
		}
		var res activities.AdminResult
		if err := h.Get(ctx, &res); err != nil {
			return err
		}
		if len(res.Terminals) != 30 {
			return fmt.Errorf("update listed %d terminals", len(res.Terminals))
		}
		return nil
	}
	n := 0
	perRead := func() error {
		n++
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("admin/region-a/terminals/%d-%d", time.Now().UnixNano(), n),
			TaskQueue: activities.RegionQueue("region-a")}, workflows.RegionAdmin, in)
		if err != nil {
			return err
		}
		var res activities.AdminResult
		if err := run.Get(ctx, &res); err != nil {
			return err
		}
		if len(res.Terminals) != 30 {
			return fmt.Errorf("workflow listed %d terminals", len(res.Terminals))
		}
		return nil
	}
	query := func() error {
		v, err := c.QueryWorkflow(ctx, workflows.CentralServiceID, "", workflows.QueryStatus)
		if err != nil {
			return err
		}
		var st workflows.CentralStatus
		return v.Get(&st)
	}
	timed := func(f func() error) time.Duration {
		if err := f(); err != nil { // warm up: the first call replays or starts what it needs
			b.Fatal(err)
		}
		start := time.Now()
		for range reads {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start) / reads
	}
	historyLen := func() int64 {
		d, err := c.DescribeWorkflowExecution(ctx, workflows.RegionServiceID("region-a"), "")
		if err != nil {
			b.Fatal(err)
		}
		return d.GetWorkflowExecutionInfo().GetHistoryLength()
	}
	count := func() int64 {
		r, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: env.Namespace})
		if err != nil {
			b.Fatal(err)
		}
		return r.GetCount()
	}
	for b.Loop() {
		before, wfBefore := historyLen(), count()
		u := timed(update)
		after, wfAfter := historyLen(), count()
		w := timed(perRead)
		wfPerRead := count() - wfAfter
		q := timed(query)
		// The region's own reports add events too while the updates run: at most a few.
		events := float64(after-before) / float64(reads+1)
		fmt.Printf("reads: update %.1f ms, workflow per read %.1f ms (update/workflow %.2f), status query %.1f ms; "+
			"%.1f history events per update; workflows left: %d by %d updates, %d by %d workflow reads\n",
			ms(u), ms(w), float64(u)/float64(w), ms(q), events, wfAfter-wfBefore, reads+1, wfPerRead, reads+1)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
