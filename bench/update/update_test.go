// Package update measures an update of one simulated terminal after a small change to its
// image, the whole way (UpdateImage on the embedded Temporal server, the region's agent API over
// loopback HTTP, the real agent writing the terminal's disk file, fsync, read-back): an
// incremental update from the version the disk holds against a full one (the recorded version
// forgotten: every block compared, what differs written, everything read back) of the same
// change. Each iteration also times cp of the raw image and sync on the same file system, the
// baseline of this shared machine. Run it with scripts/bench update.
//
// Reported per iteration: the bytes the incremental update fetched over the changed chunks'
// bytes (moved_vs_changed, 1.0 is the floor), the same for the full update, both updates' times,
// and each as a ratio to cp+sync of the whole disk.
package update

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devenv"
	"tms/internal/benchutil"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/workflows"
)

func BenchmarkUpdate(b *testing.B) {
	size := benchutil.DiskSize(b)
	dir := benchutil.Dir(b)
	ctx := context.Background()
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, RegionPortBase: -1, CentralPort: -1,
		Regions: []string{"region-a"}, Terminals: 2, DiskSize: size})
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	src, _ := env.Terminal("a-pc1")
	dst, _ := env.Terminal("a-pc2")
	timeouts := workflows.AgentTimeouts{Silence: time.Minute, Tries: 1, Total: time.Hour}
	start := func(w any, in any) client.WorkflowRun {
		run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("region-a")}, w, in)
		if err != nil {
			b.Fatal(err)
		}
		return run
	}
	capture := func() string {
		var res workflows.CaptureImageResult
		if err := start(workflows.CaptureImage, workflows.CaptureImageInput{Region: "region-a", TerminalRef: src.Name, Image: "bench", Timeouts: timeouts}).Get(ctx, &res); err != nil {
			b.Fatal(err)
		}
		return res.Version
	}
	deploy := func(image string) {
		var res workflows.DeployImageResult
		if err := start(workflows.DeployImage, workflows.DeployImageInput{Region: "region-a", Terminals: []string{dst.Name}, Image: image, Timeouts: timeouts}).Get(ctx, &res); err != nil || res.Failed != 0 {
			b.Fatalf("deploy: %+v, %v", res, err)
		}
	}
	update := func() (workflows.UpdateOutcome, time.Duration) {
		t0 := time.Now()
		var res workflows.UpdateImageResult
		if err := start(workflows.UpdateImage, workflows.UpdateImageInput{Region: "region-a", Terminals: []string{dst.Name}, Image: "bench", Timeouts: timeouts}).Get(ctx, &res); err != nil || res.Failed != 0 {
			b.Fatalf("update: %+v, %v", res, err)
		}
		return res.Terminals[0], time.Since(t0)
	}

	v1 := capture()
	// A change of about 0.02% of the 4 KiB blocks, scattered: a day's updates to a lab image.
	if _, err := sampledisk.Mutate(src.Disk, 0.0002, 9); err != nil {
		b.Fatal(err)
	}
	v2 := capture()
	changed := changedBytes(b, env, v1, v2)
	inv := env.Regions["region-a"].Inventory

	for b.Loop() {
		b.StopTimer()
		cpDst := filepath.Join(dir, "cp.raw")
		benchutil.Run(b, "sync")
		cp := benchutil.Run(b, "cp", src.Disk, cpDst) + benchutil.Run(b, "sync")
		os.Remove(cpDst)

		deploy("bench@" + v1) // the terminal holds v1, and the region records it
		benchutil.Run(b, "sync")
		b.StartTimer()
		inc, incTime := update()
		b.StopTimer()
		if inc.Decision != activities.DecisionIncremental {
			b.Fatalf("incremental update: %+v", inc)
		}

		deploy("bench@" + v1)
		if err := inv.SetVersion(ctx, dst.MAC, manifest.ID{}); err != nil {
			b.Fatal(err)
		}
		benchutil.Run(b, "sync")
		full, fullTime := update()
		if full.Decision != activities.DecisionFull {
			b.Fatalf("full update: %+v", full)
		}
		b.ReportMetric(float64(changed)/1e6, "changed_MB")
		b.ReportMetric(float64(inc.FetchedBytes)/float64(changed), "inc_moved_vs_changed")
		b.ReportMetric(float64(full.FetchedBytes)/float64(changed), "full_moved_vs_changed")
		b.ReportMetric(incTime.Seconds(), "inc_s")
		b.ReportMetric(fullTime.Seconds(), "full_s")
		b.ReportMetric(cp.Seconds(), "cp_sync_s")
		b.ReportMetric(incTime.Seconds()/cp.Seconds(), "inc_vs_cp_sync")
		b.ReportMetric(fullTime.Seconds()/cp.Seconds(), "full_vs_cp_sync")
		b.StartTimer()
	}
}

func changedBytes(b *testing.B, env *devenv.Env, v1, v2 string) int64 {
	ctx := context.Background()
	get := func(s string) *manifest.Manifest {
		id, err := manifest.ParseID(s)
		if err != nil {
			b.Fatal(err)
		}
		v, err := env.RegionStore("region-a").GetManifest(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		return v.Manifest
	}
	m1, m2 := get(v1), get(v2)
	var n int64
	for i := range m2.Chunks {
		if m1.Chunks[i] != m2.Chunks[i] {
			_, size := m2.ChunkRange(i)
			n += size
		}
	}
	if n == 0 {
		b.Fatal("the change touched no chunk")
	}
	return n
}
