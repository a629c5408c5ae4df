package devenv_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"tms/activities"
	"tms/devenv"
	"tms/imageio"
	"tms/internal/pgtest"
	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
	"tms/workflows"
)

// planImages are the four images the plan tests capture in region-a, one seed each.
var planImages = []string{"img1", "img2", "img3", "img4"}

// sampleDisk writes image k's disk (16 MiB).
func sampleDisk(t *testing.T, path string, k int) {
	t.Helper()
	if err := sampledisk.Write(path, sampledisk.Options{Size: 16 << 20, Seed: uint64(100 + k)}); err != nil {
		t.Fatal(err)
	}
}

// fourImagesBytes is what the four images take in one store: region-b's capacity in the plan
// test, so three fill it to about 75% (under its high-water mark of 90%) and a fourth does not
// fit under it.
func fourImagesBytes(t *testing.T) int64 {
	t.Helper()
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	for k, name := range planImages {
		disk := filepath.Join(t.TempDir(), name+".raw")
		sampleDisk(t, disk, k)
		if _, err := imageio.Import(ctx, s, disk, imageio.ImportOptions{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	u, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return u.Used
}

// TestPlansEvictAndSchedulesGetPlans is the storage side of pre-distribution in tms dev, with
// region-b's store capped at four images' worth: three images fill it (img1 pinned, img2 kept
// by an admin's plan, img3 neither); a deploy schedule of img4 in region-b gets its plan from
// central's planner, which makes room by evicting img3, the oldest image nothing needs, and is
// ready long before the firing; the pinned and the planned images survive, and central forgets
// region-b's copy of img3.
func TestPlansEvictAndSchedulesGetPlans(t *testing.T) {
	capacity := fourImagesBytes(t)
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), TemporalPort: -1, UIPort: -1, CentralPort: -1,
		RegionPortBase: -1, Regions: []string{"region-a", "region-b"}, Terminals: 1, DiskSize: 16 << 20,
		StoreCapacityOf: map[string]int64{"region-b": capacity}, PlannerInterval: time.Second, ReportInterval: time.Second, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src, _ := env.Terminal("a-pc1")
	ids := map[string]manifest.ID{}
	for k, name := range planImages {
		sampleDisk(t, src.Disk, k)
		id, err := manifest.ParseID(capture(t, env, "region-a", "a-pc1", name).Version)
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	for _, name := range planImages[:3] {
		run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.ShareWorkflowID(name, "region-b"), TaskQueue: activities.CentralQueue},
			workflows.ShareImage, workflows.ShareImageInput{Image: name, Target: "region-b"})
		if err != nil {
			t.Fatal(err)
		}
		if err := run.Get(ctx, nil); err != nil {
			t.Fatalf("share of %s: %v", name, err)
		}
	}
	b := env.Regions["region-b"].Store

	// img1 pinned (as tms image pin --region region-b img1 does, resolving img1 at central),
	// img2 kept by a plan.
	h, err := env.Client.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: workflows.RegionServiceID("region-b"), UpdateName: workflows.UpdateChange,
		Args: []any{activities.AdminInput{Op: activities.OpPin, Image: "img1@" + ids["img1"].String(), By: "test"}}, WaitForStage: client.WorkflowUpdateStageCompleted})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Get(ctx, nil); err != nil {
		t.Fatalf("pin: %v", err)
	}
	if _, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.PlanWorkflowID("keep-img2"), TaskQueue: activities.CentralQueue},
		workflows.PlanImage, workflows.PlanInput{Name: "keep-img2", Image: "img2", Regions: []string{"region-b"}, By: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitPlanReady(ctx, t, env, "keep-img2")

	// A schedule restores img4 in region-b in an hour.
	firing := time.Now().UTC().Add(time.Hour).Truncate(time.Minute)
	memo := workflows.ScheduleMemo{Kind: workflows.TaskDeploy, Region: "region-b", Target: "lab", Image: "img4"}
	_, err = env.Client.ScheduleClient().Create(ctx, client.ScheduleOptions{ID: "b-restore",
		Spec: client.ScheduleSpec{Calendars: []client.ScheduleCalendarSpec{{Year: []client.ScheduleRange{{Start: firing.Year()}},
			Month: []client.ScheduleRange{{Start: int(firing.Month())}}, DayOfMonth: []client.ScheduleRange{{Start: firing.Day()}},
			Hour: []client.ScheduleRange{{Start: firing.Hour()}}, Minute: []client.ScheduleRange{{Start: firing.Minute()}}}}},
		Action: &client.ScheduleWorkflowAction{ID: "deploy/region-b/lab/img4", Workflow: workflows.DeployImage, TaskQueue: activities.RegionQueue("region-b"),
			Args: []any{workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "img4"}}},
		Memo: map[string]any{workflows.ScheduleMemoKey: memo},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Client.ScheduleClient().GetHandle(context.Background(), "b-restore").Delete(context.Background())
	st := waitPlanReady(ctx, t, env, workflows.ScheduleFiringPlan("b-restore", firing))
	if !st.By.Equal(firing) || st.Origin != "schedule:b-restore" || st.Version != ids["img4"].String() {
		t.Fatalf("the schedule's plan: %+v", st)
	}
	if ready := st.Regions[0].Ready; !ready.Before(firing) {
		t.Fatalf("img4 ready at %v, not before the firing at %v", ready, firing)
	}

	for name, want := range map[string]bool{"img1": true, "img2": true, "img3": false, "img4": true} {
		_, err := b.GetManifest(ctx, ids[name])
		if got := err == nil; got != want || (err != nil && !errors.Is(err, store.ErrNotFound)) {
			t.Errorf("region-b holds %s: %v (%v), want %v", name, got, err, want)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		locs, err := env.Central.Catalog.Locations(ctx, ids["img3"])
		if err != nil {
			t.Fatal(err)
		}
		inB := false
		for _, l := range locs {
			inB = inB || l.Region.ID == "region-b"
		}
		if !inB {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("central still lists region-b's evicted copy of img3")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitPlanReady waits until plan name's every region is ready, and returns its status.
func waitPlanReady(ctx context.Context, t *testing.T, env *devenv.Env, name string) workflows.PlanStatus {
	t.Helper()
	var st workflows.PlanStatus
	var err error
	for ctx.Err() == nil {
		var v interface{ Get(any) error }
		if v, err = env.Client.QueryWorkflow(ctx, workflows.PlanWorkflowID(name), "", workflows.QueryProgress); err == nil {
			if err = v.Get(&st); err == nil && len(st.Regions) > 0 && len(st.NotReady()) == 0 {
				return st
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("plan %s not ready: %+v (%v)", name, st, err)
	return st
}

// TestPlanWindowAndRate is a plan whose window opens within the next minute, with a rate cap:
// its share starts inside the window, not before, and moves the image at the plan's rate
// (within 5%, measured from the pull's own start and end in the share's history).
func TestPlanWindowAndRate(t *testing.T) {
	if testing.Short() {
		t.Skip("waits up to a minute for the window to open")
	}
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), TemporalPort: -1, UIPort: -1, CentralPort: -1,
		RegionPortBase: -1, Regions: []string{"region-a", "region-b"}, Terminals: 1, DiskSize: 16 << 20, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src, _ := env.Terminal("a-pc1")
	sampleDisk(t, src.Disk, 7)
	capture(t, env, "region-a", "a-pc1", "exam")

	reg, err := env.Central.Catalog.GetRegion(ctx, "region-b")
	if err != nil {
		t.Fatal(err)
	}
	zone, err := time.LoadLocation(reg.Timezone)
	if err != nil {
		t.Fatalf("region-b's zone %q: %v", reg.Timezone, err)
	}
	opens := time.Now().In(zone).Truncate(time.Minute).Add(time.Minute)
	if time.Until(opens) < 5*time.Second {
		opens = opens.Add(time.Minute)
	}
	window := opens.Format("15:04") + "-" + opens.Add(30*time.Minute).Format("15:04")
	const rate = 1_000_000 // 1 MB/s: the 16 MiB sample image's ~9 MB take ~9 s
	in := workflows.PlanInput{Name: "nightly", Image: "exam", Regions: []string{"region-b"}, By: time.Now().Add(time.Hour), Window: window, Rate: rate}
	if _, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.PlanWorkflowID(in.Name), TaskQueue: activities.CentralQueue},
		workflows.PlanImage, in); err != nil {
		t.Fatal(err)
	}
	st := waitPlanReady(ctx, t, env, in.Name)
	share := st.Regions[0].Share
	started, ended, moved := pullTimes(ctx, t, env, share)
	if started.Before(opens) {
		t.Fatalf("the share's pull started at %s, before the window %s opened", started.Format(time.TimeOnly), window)
	}
	got := float64(moved) / ended.Sub(started).Seconds()
	t.Logf("window %s (%s): the pull ran %s–%s, %d bytes at %.0f B/s (cap %d, ratio %.3f)", window, zone, started.Format(time.TimeOnly),
		ended.Format(time.TimeOnly), moved, got, rate, got/rate)
	switch {
	case got > 1.05*rate || got < 0.85*rate:
		t.Fatalf("the share moved %.0f bytes/s, not within 5%% of the plan's %d", got, rate)
	case got < 0.95*rate:
		// Slower than the cap is not a cap broken: a machine too busy to keep up (CI runs
		// test packages side by side); the bucket's pace is checked exactly in wanrate.
		t.Logf("moved at %.3f of the cap: slower than 5%% under it, taken as a busy machine", got/rate)
	}
}

// pullTimes reads when a share's PullFromPeer started and ended, and what it moved, from the
// share's history.
func pullTimes(ctx context.Context, t *testing.T, env *devenv.Env, share string) (started, ended time.Time, moved int64) {
	t.Helper()
	it := env.Client.GetWorkflowHistory(ctx, share, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	pull := map[int64]bool{}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "PullFromPeer":
			pull[e.GetEventId()] = true
		case pull[e.GetActivityTaskStartedEventAttributes().GetScheduledEventId()]:
			started = e.GetEventTime().AsTime()
		case pull[e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]:
			ended = e.GetEventTime().AsTime()
			var res activities.MoveResult
			if err := converter.GetDefaultDataConverter().FromPayloads(e.GetActivityTaskCompletedEventAttributes().GetResult(), &res); err != nil {
				t.Fatal(err)
			}
			moved = res.MovedBytes
		}
	}
	if started.IsZero() || ended.IsZero() || moved == 0 {
		t.Fatalf("share %s: no completed peer pull in its history", share)
	}
	return started, ended, moved
}
