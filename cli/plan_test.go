package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devtemporal"
	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/internal/temporaltest"
	"tms/manifest"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/transfer"
	"tms/workers"
	"tms/workflows"
)

// planWorld is central and region-b on the real Temporal server, with region-a's data endpoint
// serving an 8 MiB image "lab" that central's catalog knows.
type planWorld struct {
	srv     *devtemporal.Server
	c       client.Client
	sc      activities.StateCatalog
	key     *signing.PrivateKey
	sb      *store.Store
	version manifest.ID
	run     tmsRun
}

func newPlanWorld(t *testing.T) *planWorld {
	t.Helper()
	srv, c := testTemporal(t)
	ctx := context.Background()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := storetest.Dir(t)
	sb, _ := storetest.Dir(t)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := sampledisk.Write(disk, sampledisk.Options{Size: 8 << 20, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	res, err := imageio.Import(ctx, sa, disk, imageio.ImportOptions{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.PutSignature(ctx, res.Version.ID, key.SignVersion(res.Version.ID)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&transfer.Handler{Store: sa, Region: "region-a", CentralKey: key.Public()}).Routes(mux)
	peerA := httptest.NewServer(mux)
	t.Cleanup(peerA.Close)

	sc, inv := testState(t, activities.RegionInfo{ID: "region-a", Endpoint: peerA.URL, Timezone: "UTC"}, activities.RegionInfo{ID: "region-b", Timezone: "UTC"})
	if err := sc.C.RecordVersion(ctx, state.Version{ID: res.Version.ID, Name: "lab", Created: res.Version.Manifest.Meta.Created,
		DiskSize: res.DiskSize, ChunkSize: res.Version.Manifest.ChunkSize, StoredBytes: res.Stats.StoredBytes}, "latest"); err != nil {
		t.Fatal(err)
	}
	if err := sc.C.SetLocation(ctx, res.Version.ID, "region-a", state.Verified); err != nil {
		t.Fatal(err)
	}
	startWorkers(t, workers.NewRegion(c, &activities.Region{ID: "region-b", Store: sb, Inventory: inv, CentralKey: key.Public(), StoreCapacity: 1 << 30}))
	return &planWorld{srv: srv, c: c, sc: sc, key: key, sb: sb, version: res.Version.ID, run: runnerAt(srv.Address())}
}

// central starts central's worker (with its service workflow); stop stops it.
func (w *planWorld) central(t *testing.T) (stop func()) {
	t.Helper()
	cw := workers.NewCentral(w.c, &activities.Central{Catalog: w.sc, Key: w.key})
	if err := cw.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(cw.Stop) }
	t.Cleanup(stop)
	return stop
}

// waitReady waits until plan name's regions are all ready and returns its row.
func (w *planWorld) waitReady(t *testing.T, name string) planRow {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		row := decode[planRow](t, must(t, w.run, "plan", "show", name, "--json"))
		if len(row.Regions) > 0 && len(row.NotReady()) == 0 {
			return row
		}
		if time.Now().After(deadline) {
			t.Fatalf("plan %s not ready within a minute: %+v", name, row)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A plan, through the commands, on the real Temporal server with central's worker and a region
// that pulls the image from a peer: bad plans are refused before anything starts, a good one
// brings the image and says ready, and rm stops and removes it.
func TestPlanCommandsOverTemporal(t *testing.T) {
	w := newPlanWorld(t)
	w.central(t)
	ctx := context.Background()
	c, sb := w.c, w.sb
	run := w.run
	by := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--image", "lab", "--regions", "region-b", "--by", "2020-01-01 07:00"}, "is in the past"},
		{[]string{"--image", "nope", "--regions", "region-b", "--by", by}, "image nope is not in central's catalog"},
		{[]string{"--image", "lab", "--regions", "region-x", "--by", by}, "region-x"},
		{[]string{"--image", "lab", "--regions", "region-b", "--by", by, "--window", "22:00"}, "--window: window \"22:00\": want HH:MM-HH:MM"},
		{[]string{"--image", "lab", "--regions", "region-b", "--by", by, "--rate", "0"}, "must be above zero"},
		{[]string{"--image", "lab", "--regions", "region-b,region-b", "--by", by}, "named twice"},
		{[]string{"--image", "lab", "--by", by}, "--regions"},
	} {
		code, _, errs := run(append([]string{"plan", "create", "bad"}, tc.args...)...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("plan create %v: exit %d, %q; want an error with %q", tc.args, code, errs, tc.want)
		}
	}
	if rows := decode[[]planRow](t, must(t, run, "plan", "ls", "--json")); len(rows) != 0 {
		t.Fatalf("refused plans started: %+v", rows)
	}

	out := must(t, run, "plan", "create", "exam-week", "--image", "lab", "--regions", "region-b", "--by", by, "--rate", "50MB/s")
	if !strings.Contains(out, "started plan exam-week: lab to region-b by ") {
		t.Fatalf("plan create: %q", out)
	}
	if code, _, errs := run("plan", "create", "exam-week", "--image", "lab", "--regions", "region-b", "--by", by); code == 0 || !strings.Contains(errs, "plan exam-week exists and runs") {
		t.Fatalf("a second plan of the same name: %d %q", code, errs)
	}
	deadline := time.Now().Add(time.Minute)
	var row planRow
	for {
		row = decode[planRow](t, must(t, run, "plan", "show", "exam-week", "--json"))
		if len(row.Regions) == 1 && row.Regions[0].State == workflows.PlanReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("region-b not ready within a minute: %+v", row)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if row.Version != w.version.String() || row.Rate != 50_000_000 || row.State != "running" {
		t.Fatalf("plan show: %+v", row)
	}
	if _, err := sb.GetManifest(ctx, w.version); err != nil {
		t.Fatalf("region-b's store lacks the version the plan says is ready: %v", err)
	}
	out = must(t, run, "plan", "ls")
	if !strings.Contains(out, "exam-week") || !strings.Contains(out, w.version.Short()) {
		t.Fatalf("plan ls:\n%s", out)
	}
	out = must(t, run, "plan", "show", "exam-week")
	if !strings.Contains(out, "region-b") || !strings.Contains(out, "ready since") {
		t.Fatalf("plan show:\n%s", out)
	}
	// Central's status keeps the plan's last report.
	var st workflows.CentralStatus
	deadline = time.Now().Add(20 * time.Second)
	for {
		v, err := c.QueryWorkflow(ctx, workflows.CentralServiceID, "", workflows.QueryStatus)
		if err == nil {
			err = v.Get(&st)
		}
		if err == nil && len(st.Plans) == 1 && len(st.Plans[0].NotReady()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("central's status: %+v, %v", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	temporaltest.SaveHistory(t, c, workflows.PlanWorkflowID("exam-week"), "", "PlanImage-ready")
	out = must(t, run, "plan", "rm", "exam-week")
	if !strings.Contains(out, "plan exam-week removed") {
		t.Fatalf("plan rm: %q", out)
	}
	// The region's workflow, which outlives a continue-as-new of the plan, ended with it.
	regionWF := workflows.PlanRegionWorkflowID("exam-week", "region-b")
	deadline = time.Now().Add(20 * time.Second)
	for {
		d, err := c.DescribeWorkflowExecution(ctx, regionWF, "")
		if err != nil {
			t.Fatal(err)
		}
		if s := d.GetWorkflowExecutionInfo().GetStatus(); s != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			if s != enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED {
				t.Fatalf("the region's workflow of a removed plan ended %v, want canceled", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the region's workflow of a removed plan still runs")
		}
		time.Sleep(200 * time.Millisecond)
	}
	temporaltest.SaveHistory(t, c, regionWF, "", "PlanImageRegion-removed")
	if code, _, errs := run("plan", "show", "exam-week"); code == 0 || !strings.Contains(errs, "no plan exam-week") {
		t.Fatalf("plan show after rm: %d %q", code, errs)
	}
}

// Central's worker stopped while a plan's share runs and started again (a restart of central):
// the plan goes on from where it was and ends ready.
func TestPlanGoesOnAcrossARestartOfCentral(t *testing.T) {
	w := newPlanWorld(t)
	stop := w.central(t)
	by := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	// At 1 MB/s the image's few MB take seconds: the restart falls inside the share.
	must(t, w.run, "plan", "create", "restart", "--image", "lab", "--regions", "region-b", "--by", by, "--rate", "1MB/s")
	deadline := time.Now().Add(30 * time.Second)
	for {
		row := decode[planRow](t, must(t, w.run, "plan", "show", "restart", "--json"))
		if len(row.Regions) == 1 && row.Regions[0].State == workflows.PlanSharing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plan's share did not start: %+v", row)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	time.Sleep(2 * time.Second)
	w.central(t)
	row := w.waitReady(t, "restart")
	if row.Regions[0].Attempts != 1 {
		t.Errorf("the plan tried %d times; a restart of central is not a failed share", row.Regions[0].Attempts)
	}
	if _, err := w.sb.GetManifest(context.Background(), w.version); err != nil {
		t.Fatalf("region-b lacks the version the plan says is ready: %v", err)
	}
}
