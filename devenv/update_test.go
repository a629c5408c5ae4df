package devenv_test

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devenv"
	"tms/internal/sampledisk"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/workflows"
)

func updateImage(t *testing.T, env *devenv.Env, in workflows.UpdateImageInput, run int) workflows.UpdateImageResult {
	t.Helper()
	if in.Timeouts == (workflows.AgentTimeouts{}) {
		in.Timeouts = quick
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := workflows.Stamped(workflows.UpdateWorkflowID(in.Region, in.Group, in.Terminals, in.Image), time.Unix(1700000000+int64(run), 0))
	wr, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: activities.RegionQueue(in.Region)}, workflows.UpdateImage, in)
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.UpdateImageResult
	if err := wr.Get(ctx, &res); err != nil {
		t.Fatalf("update: %v", err)
	}
	history(t, env, wr.GetID(), "update")
	for _, o := range res.Terminals {
		if o.Decision != activities.DecisionStop {
			history(t, env, wr.GetID()+"/"+o.Name, "update-terminal")
		}
	}
	return res
}

// TestUpdateByVersionChain is an update by the version chain on a real Temporal server with real agents:
// capture v1 from a-pc1, deploy it to region-b/lab, change a-pc1 (as `tms dev mutate` does),
// capture v2, update the lab to v2 → incremental on all three, each fetching no more than
// 1.1 × the changed chunks' bytes, disks identical to a-pc1; update again → stop on all
// (nothing booted); change one terminal's disk and forget its recorded version (what the
// installed-OS agent's check on start does) → full for that one, stop for the others, and
// every disk identical to a-pc1 again.
func TestUpdateByVersionChain(t *testing.T) {
	env := start(t, t.TempDir(), "region-a", "region-b")
	defer env.Stop()
	ctx := context.Background()
	src, _ := env.Terminal("a-pc1")
	v1 := capture(t, env, "region-a", "a-pc1", "classroom")
	if first := deploy(t, env, workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "classroom"}); first.Failed != 0 {
		t.Fatalf("deploy of v1: %+v", first)
	}

	if _, err := sampledisk.Mutate(src.Disk, 0.002, 11); err != nil {
		t.Fatal(err)
	}
	v2 := capture(t, env, "region-a", "a-pc1", "classroom")
	want := storetest.FileSum(t, src.Disk)
	changedBytes, changed, total := changedChunks(t, env, v1.Version, v2.Version)
	if changed == 0 || changed >= total/2 {
		t.Fatalf("the change touched %d of %d chunks: the test needs a few", changed, total)
	}
	t.Logf("v1 %s → v2 %s: %d of %d chunks changed, %d bytes", v1.Version[:12], v2.Version[:12], changed, total, changedBytes)

	lab := workflows.UpdateImageInput{Region: "region-b", Group: "lab", Image: "classroom"}
	res := updateImage(t, env, lab, 1)
	if res.Version != v2.Version || res.Incremental != 3 || res.Failed != 0 {
		t.Fatalf("first update: %+v", res)
	}
	for _, o := range res.Terminals {
		if !o.OK || o.Decision != activities.DecisionIncremental || o.FetchedBytes == 0 || o.FetchedBytes*10 > changedBytes*11 {
			t.Errorf("%s: %+v; want incremental, fetching at most 1.1 × %d bytes", o.Name, o, changedBytes)
		}
		t.Logf("%s: %s (%s), %d bytes fetched, %d written", o.Name, o.Decision, o.Reason, o.FetchedBytes, o.WrittenBytes)
	}
	if res.FetchedBytes*10 > 3*changedBytes*11 {
		t.Errorf("the update fetched %d bytes in all for 3 × %d changed", res.FetchedBytes, changedBytes)
	}
	sameAsSource(t, env, want)

	again := updateImage(t, env, lab, 2)
	if again.Stopped != 3 || again.FetchedBytes != 0 || again.WrittenBytes != 0 {
		t.Fatalf("second update: %+v", again)
	}
	for _, o := range again.Terminals {
		if o.Decision != activities.DecisionStop {
			t.Errorf("%s: %+v, want stop", o.Name, o)
		}
	}

	pc2, _ := env.Terminal("b-pc2")
	if _, err := sampledisk.Mutate(pc2.Disk, 0.01, 12); err != nil {
		t.Fatal(err)
	}
	if err := env.Regions["region-b"].Inventory.SetVersion(ctx, pc2.MAC, manifest.ID{}); err != nil {
		t.Fatal(err)
	}
	third := updateImage(t, env, lab, 3)
	if third.Full != 1 || third.Stopped != 2 || third.Failed != 0 {
		t.Fatalf("third update: %+v", third)
	}
	for _, o := range third.Terminals {
		wantDecision := activities.DecisionStop
		if o.Name == "b-pc2" {
			wantDecision = activities.DecisionFull
		}
		if o.Decision != wantDecision || !o.OK {
			t.Errorf("%s: %+v, want %s", o.Name, o, wantDecision)
		}
		if o.Name == "b-pc2" && (o.Written == 0 || o.Skipped == 0) {
			t.Errorf("b-pc2's full update wrote %d chunks and found %d right: it should write the changed ones only", o.Written, o.Skipped)
		}
	}
	sameAsSource(t, env, want)
	for _, term := range terminalsOf(env, "region-b") {
		got, err := env.Regions["region-b"].Inventory.Terminal(ctx, term.MAC)
		if err != nil || got.Version.String() != v2.Version {
			t.Errorf("%s is recorded as holding %s, want %s (%v)", term.Name, got.Version.Short(), v2.Version[:12], err)
		}
	}
}

// changedChunks compares two versions' manifests in region-a's store.
func changedChunks(t *testing.T, env *devenv.Env, a, b string) (bytes int64, changed, total int) {
	t.Helper()
	ctx := context.Background()
	get := func(s string) *manifest.Manifest {
		id, err := manifest.ParseID(s)
		if err != nil {
			t.Fatal(err)
		}
		v, err := env.RegionStore("region-a").GetManifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return v.Manifest
	}
	ma, mb := get(a), get(b)
	for i := range mb.Chunks {
		if ma.Chunks[i] != mb.Chunks[i] {
			_, n := mb.ChunkRange(i)
			bytes += n
			changed++
		}
	}
	return bytes, changed, len(mb.Chunks)
}

func sameAsSource(t *testing.T, env *devenv.Env, want [32]byte) {
	t.Helper()
	for _, term := range terminalsOf(env, "region-b") {
		if storetest.FileSum(t, term.Disk) != want {
			t.Errorf("%s differs from a-pc1", term.Name)
		}
	}
}

// TestUpdateAgentKilledMidTask kills the agent of a terminal whose update is running: once the
// agent has read its task the terminal is no longer recorded as holding the old version, the
// restarted agent boots into the same task and redoes the write, and the terminal ends holding
// the new version, recorded.
func TestUpdateAgentKilledMidTask(t *testing.T) {
	env := start(t, t.TempDir(), "region-a")
	defer env.Stop()
	ctx := context.Background()
	src, _ := env.Terminal("a-pc1")
	pc2, _ := env.Terminal("a-pc2")
	inv := env.Regions["region-a"].Inventory
	v1 := capture(t, env, "region-a", "a-pc1", "lab")
	deploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc2"}, Image: "lab"})
	if _, err := sampledisk.Mutate(src.Disk, 0.01, 13); err != nil {
		t.Fatal(err)
	}
	v2 := capture(t, env, "region-a", "a-pc1", "lab")

	in := workflows.UpdateImageInput{Region: "region-a", Terminals: []string{"a-pc2"}, Image: "lab", Timeouts: quick}
	wr, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.UpdateWorkflowID("region-a", "", in.Terminals, "lab"),
		TaskQueue: activities.RegionQueue("region-a")}, workflows.UpdateImage, in)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(2 * time.Millisecond) {
		tasks, err := inv.Tasks(ctx, pc2.MAC, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) > 0 && tasks[0].Kind == "update" && tasks[0].State != "waiting" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no update task started running")
		}
	}
	if term, _ := inv.Terminal(ctx, pc2.MAC); term.Version.String() == v1.Version {
		t.Fatalf("a-pc2 is still recorded as holding %s while its update writes", v1.Version[:12])
	}
	env.StopAgent("a-pc2")
	env.StartAgent("a-pc2")
	var res workflows.UpdateImageResult
	if err := wr.Get(ctx, &res); err != nil || res.Incremental != 1 || res.Failed != 0 {
		t.Fatalf("update after the agent's restart: %+v, %v", res, err)
	}
	if storetest.FileSum(t, pc2.Disk) != storetest.FileSum(t, src.Disk) {
		t.Error("a-pc2 differs from a-pc1 after the update")
	}
	if term, _ := inv.Terminal(ctx, pc2.MAC); term.Version.String() != v2.Version {
		t.Errorf("a-pc2 is recorded as holding %s, want %s", term.Version.Short(), v2.Version[:12])
	}
}
