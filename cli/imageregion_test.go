package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/state"
	"tms/store"
	"tms/workers"
)

// TestRegionImageCommands runs a region over the real Temporal server: tms image pin, ls
// --region (text and JSON), rm refusing a pinned version, unpin, and the store's figures in
// tms region ls and tms status.
func TestRegionImageCommands(t *testing.T) {
	srv, c := testTemporal(t)
	ctx := context.Background()
	sc, inv := testState(t, activities.RegionInfo{ID: "region-a"})
	sa, dir := storetest.Dir(t)
	win := storetest.Publish(t, sa, "win11", "v1", "w1", "w2")
	lab := storetest.Publish(t, sa, "lab", "spring", "l1")
	// A deploy of lab finished on one terminal.
	const mac = "52:54:00:00:00:01"
	task, err := inv.StartTask(ctx, state.Task{ID: "deploy/region-a/pc1/lab", MAC: mac, Kind: agentwire.KindDeploy, Version: lab.ID.String()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	deployed := time.Now().Truncate(time.Second)
	if _, _, err := inv.FinishTask(ctx, task.ID, state.TaskDone, "", "", deployed); err != nil {
		t.Fatal(err)
	}
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "region-a", Store: sa, Inventory: inv, ReportInterval: time.Second, StoreCapacity: 1 << 30}))
	run := runnerAt(srv.Address())

	out := must(t, run, "image", "pin", "--region", "region-a", "win11:v1")
	if !strings.Contains(out, "pinned win11@"+win.ID.String()[:12]+" in region region-a") {
		t.Fatalf("pin: %s", out)
	}
	if out := must(t, run, "image", "pin", "--region", "region-a", "win11@"+win.ID.Short()); !strings.Contains(out, "pinned in region region-a already") {
		t.Fatalf("second pin: %s", out)
	}
	fail(t, run, 1, "region region-a holds no image win11:v2", "image", "pin", "--region", "region-a", "win11:v2")

	got := decode[regionImages](t, must(t, run, "image", "ls", "--region", "region-a", "--json"))
	if got.Count != 2 || len(got.Images) != 2 || got.Store.Capacity != 1<<30 || got.Store.HighWater != 0.9 || got.Store.LowWater != 0.8 {
		t.Fatalf("image ls --region --json: %+v", got)
	}
	byName := map[string]activities.ImageDescriptor{}
	for _, im := range got.Images {
		byName[im.Name] = im
	}
	if w := byName["win11"]; !w.Pinned || w.Version != win.ID.String() || w.StoredBytes == 0 || w.Stored.IsZero() || !w.LastDeployed.IsZero() {
		t.Errorf("win11: %+v", w)
	}
	if l := byName["lab"]; l.Pinned || !l.LastDeployed.Equal(deployed) || strings.Join(l.Tags, ",") != "spring" {
		t.Errorf("lab: %+v (deployed %s)", l, deployed)
	}
	text := must(t, run, "image", "ls", "--region", "region-a")
	for _, want := range []string{"NAME", "PINNED/HELD BY", "LAST DEPLOYED", "of 1.0 GiB used", "high water 90%", "2 image versions"} {
		if !strings.Contains(text, want) {
			t.Errorf("image ls --region: want %q in\n%s", want, text)
		}
	}
	if !strings.Contains(text, "win11") || !strings.Contains(strings.SplitN(text[strings.Index(text, "win11"):], "\n", 2)[0], "pinned") {
		t.Errorf("image ls --region does not show win11 pinned:\n%s", text)
	}

	// rm on the region's store refuses the pinned version, naming the pin; the store's holds
	// and image show list the pin as one that stands until unpinned.
	fail(t, run, 1, "in use by pin", "image", "rm", "--store", dir, "win11:v1")
	if out := must(t, run, "store", "holds", "--store", dir); !strings.Contains(out, "pin") || !strings.Contains(out, "unpinned") || strings.Contains(out, "lapsed") {
		t.Errorf("store holds with a pin:\n%s", out)
	}
	if out := must(t, run, "image", "show", "--store", dir, "win11:v1"); !strings.Contains(out, "by pin until unpinned") {
		t.Errorf("image show of a pinned version:\n%s", out)
	}

	if out := must(t, run, "image", "unpin", "--region", "region-a", "win11:v1"); !strings.Contains(out, "unpinned win11@") {
		t.Fatalf("unpin: %s", out)
	}
	if out := must(t, run, "image", "unpin", "--region", "region-a", "win11:v1"); !strings.Contains(out, "was not pinned") {
		t.Fatalf("second unpin: %s", out)
	}

	// Central keeps the region's last report: region ls and status show the store.
	deadline := time.Now().Add(20 * time.Second)
	for {
		rows := decode[[]regionRow](t, must(t, run, "region", "ls", "--json"))
		if len(rows) == 1 && rows[0].Images == 2 && rows[0].HighWater == 0.9 && rows[0].Capacity == 1<<30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("region ls never showed the store: %+v", rows)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := must(t, run, "region", "ls"); !strings.Contains(out, "IMAGES") || !strings.Contains(out, "90%") {
		t.Errorf("region ls:\n%s", out)
	}
	st := decode[[]regionStatusRow](t, must(t, run, "status", "--json"))
	if len(st) != 1 || st[0].Images != 2 || st[0].HighWater != 0.9 {
		t.Errorf("status: %+v", st)
	}
}

// TestRegionEvictsAboveHighWaterAndCentralForgets runs a region whose store is above its
// high-water mark over the real Temporal server: its service workflow evicts the oldest
// version nothing holds (never the pinned one), and central's service workflow drops the
// evicted version's location from the catalog once a report no longer lists it.
func TestRegionEvictsAboveHighWaterAndCentralForgets(t *testing.T) {
	_, c := testTemporal(t)
	ctx := context.Background()
	sc, inv := testState(t, activities.RegionInfo{ID: "region-a"})
	sa, _ := storetest.Dir(t)
	old := storetest.Publish(t, sa, "old", "v1", "o1", "o2", "o3")
	keep := storetest.Publish(t, sa, "win11", "v1", "w1", "w2", "w3")
	if err := sa.Pin(ctx, keep.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*store.Version{old, keep} {
		if err := sc.C.RecordVersion(ctx, state.Version{ID: v.ID, Name: v.Manifest.Meta.Name, Created: time.Now(), DiskSize: v.Manifest.DiskSize,
			ChunkSize: v.Manifest.ChunkSize}, "v1"); err != nil {
			t.Fatal(err)
		}
		if err := sc.SetVerified(ctx, v.ID, "region-a"); err != nil {
			t.Fatal(err)
		}
	}
	u, err := sa.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 95% full against the default high-water mark of 90%: the old version must go.
	capacity := u.Used * 100 / 95
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "region-a", Store: sa, Inventory: inv, ReportInterval: time.Second, StoreCapacity: capacity}))

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, gone := sa.GetManifest(ctx, old.ID)
		locs, err := sc.C.Locations(ctx, old.ID)
		if err != nil {
			t.Fatal(err)
		}
		if gone != nil && len(locs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: old version's manifest: %v; its locations in the catalog: %+v", gone, locs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := sa.GetManifest(ctx, keep.ID); err != nil {
		t.Fatalf("the pinned version went: %v", err)
	}
	if locs, err := sc.C.Locations(ctx, keep.ID); err != nil || len(locs) != 1 {
		t.Fatalf("the pinned version's locations: %+v, %v", locs, err)
	}
}
