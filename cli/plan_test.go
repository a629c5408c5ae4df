package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/signing"
	"tms/state"
	"tms/transfer"
	"tms/workers"
	"tms/workflows"
)

// A plan, through the commands, on the real Temporal server with central's worker and a region
// that pulls the image from a peer: bad plans are refused before anything starts, a good one
// brings the image and says ready, and rm stops and removes it.
func TestPlanCommandsOverTemporal(t *testing.T) {
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
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc, Key: key}),
		workers.NewRegion(c, &activities.Region{ID: "region-b", Store: sb, Inventory: inv, CentralKey: key.Public()}))
	if _, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.CentralServiceID, TaskQueue: activities.CentralQueue},
		workflows.CentralService, workflows.CentralServiceInput{}); err != nil {
		t.Fatal(err)
	}
	run := runnerAt(srv.Address())
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
	if row.Version != res.Version.ID.String() || row.Rate != 50_000_000 || row.State != "running" {
		t.Fatalf("plan show: %+v", row)
	}
	if _, err := sb.GetManifest(ctx, res.Version.ID); err != nil {
		t.Fatalf("region-b's store lacks the version the plan says is ready: %v", err)
	}
	out = must(t, run, "plan", "ls")
	if !strings.Contains(out, "exam-week") || !strings.Contains(out, manifest.ID(res.Version.ID).Short()) {
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

	out = must(t, run, "plan", "rm", "exam-week")
	if !strings.Contains(out, "plan exam-week removed") {
		t.Fatalf("plan rm: %q", out)
	}
	if code, _, errs := run("plan", "show", "exam-week"); code == 0 || !strings.Contains(errs, "no plan exam-week") {
		t.Fatalf("plan show after rm: %d %q", code, errs)
	}
}
