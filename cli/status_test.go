package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/state"
	"tms/workers"
)

// TestStatusOverTemporal runs tms status against a real Temporal server, central's worker and
// two regions reporting every second: both online with their store's figures and terminals; a
// region whose worker stops goes offline within three report intervals and comes back when a
// worker serves it again; the reads leave no workflow behind.
func TestStatusOverTemporal(t *testing.T) {
	srv, c := testTemporal(t)
	ctx := context.Background()
	sc, invA := testState(t, activities.RegionInfo{ID: "region-a"}, activities.RegionInfo{ID: "region-b"})
	invB, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "region-b.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { invB.Close() })
	now := time.Now()
	for i, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"} {
		if err := invA.Enroll(ctx, mac, []string{"pc1", "pc2", "pc3"}[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := invA.Seen(ctx, "52:54:00:00:00:01", "10.0.0.1", now); err != nil {
		t.Fatal(err)
	}
	if err := invA.Seen(ctx, "52:54:00:00:00:02", "10.0.0.2", now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := invA.CreateGroup(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	if err := invA.AddToGroup(ctx, "lab", "pc1", "pc2"); err != nil {
		t.Fatal(err)
	}
	sa, _ := storetest.Dir(t)
	sb, _ := storetest.Dir(t)
	usage := func(context.Context) (int64, int64, error) { return 5 << 20, 1 << 30, nil }
	regionB := func() *activities.Region {
		return &activities.Region{ID: "region-b", Store: sb, Inventory: invB, Version: "v-test", ReportInterval: time.Second}
	}
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "region-a", Store: sa, Inventory: invA, Version: "v-test", ReportInterval: time.Second, Usage: usage}))
	wb := workers.NewRegion(c, regionB())
	if err := wb.Start(); err != nil {
		t.Fatal(err)
	}
	// Status compares the regions' report times with the clock: the real one here.
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		off := false
		a := &App{Stdout: &out, Stderr: &errb, Progress: &off, Env: func(string) (string, bool) { return "", false }}
		code := a.Run(context.Background(), append([]string{"--temporal", srv.Address()}, args...))
		return code, out.String(), errb.String()
	}

	status := func() map[string]regionStatusRow {
		rows := decode[[]regionStatusRow](t, must(t, run, "status", "--json"))
		m := map[string]regionStatusRow{}
		for _, r := range rows {
			m[r.Region] = r
		}
		return m
	}
	until := func(what string, limit time.Duration, ok func(map[string]regionStatusRow) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			m := status()
			if ok(m) {
				return time.Since(start)
			}
			if time.Since(start) > limit {
				t.Fatalf("%s: not within %s: %+v", what, limit, m)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	until("both regions online", 20*time.Second, func(m map[string]regionStatusRow) bool {
		return m["region-a"].Online && m["region-b"].Online
	})
	a := status()["region-a"]
	if a.Version != "v-test" || a.Used != 5<<20 || a.Capacity != 1<<30 || a.Terminals != 3 || a.TerminalsOnline != 1 || a.LastReport == nil {
		t.Errorf("region-a's line: %+v", a)
	}
	out := must(t, run, "status")
	for _, want := range []string{"REGION", "region-a  online", "5.0 MiB / 1.0 GiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("tms status: want %q in\n%s", want, out)
		}
	}

	d := decode[regionDetail](t, must(t, run, "status", "--region", "region-a", "--json"))
	if len(d.Groups) != 1 || d.Groups[0].Name != "lab" || d.Groups[0].Members != 2 || d.Groups[0].Online != 1 || len(d.TerminalList) != 3 {
		t.Fatalf("status --region region-a: %+v", d)
	}
	for _, tr := range d.TerminalList {
		if tr.Online != (tr.Name == "pc1") {
			t.Errorf("terminal %s online %v", tr.Name, tr.Online)
		}
	}
	out = must(t, run, "status", "--region", "region-a")
	for _, want := range []string{"GROUP", "lab", "TERMINAL", "pc1", "online", "pc3"} {
		if !strings.Contains(out, want) {
			t.Errorf("tms status --region region-a: want %q in\n%s", want, out)
		}
	}
	fail(t, run, 1, "unknown region nowhere; known: region-a, region-b", "status", "--region", "nowhere")
	fail(t, run, 2, "--watch and --json", "status", "--watch", "--json")

	// region-b's server goes away: offline within three report intervals.
	wb.Stop()
	took := until("region-b offline", 15*time.Second, func(m map[string]regionStatusRow) bool { return !m["region-b"].Online })
	t.Logf("region-b offline %s after its worker stopped (report interval 1s)", took.Round(100*time.Millisecond))
	if b := status()["region-b"]; !strings.Contains(b.Why, "no report for") || !status()["region-a"].Online {
		t.Errorf("after region-b stopped: %+v", status())
	}
	if out := must(t, run, "status", "--region", "region-b"); !strings.Contains(out, "region region-b is offline") {
		t.Errorf("status --region region-b while offline:\n%s", out)
	}
	fail(t, run, 1, "region region-b's worker did not answer within 2s", "group", "ls", "--region", "region-b", "--admin-timeout", "2s")

	// It comes back: online again, without a restart of central.
	startWorkers(t, workers.NewRegion(c, regionB()))
	until("region-b online again", 15*time.Second, func(m map[string]regionStatusRow) bool { return m["region-b"].Online })

	// Every read above went to the service workflows: there are three workflows in all.
	n, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if n.GetCount() != 3 {
		t.Errorf("%d workflows after status and listings; want the 3 service workflows", n.GetCount())
	}
}
