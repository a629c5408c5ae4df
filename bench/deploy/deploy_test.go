// Package deploy measures a deploy of a 2 GiB image to one simulated terminal, the whole way:
// the DeployImage workflow on the embedded Temporal server, the region's agent API over
// loopback HTTP, the real agent writing the terminal's disk file, fsync and read-back
// verification. Each iteration also times cp of the raw image and sync on the same file
// system, and reports the deploy as a ratio to it. Run it with scripts/bench deploy.
//
// The first capture of the source terminal is timed too (reported with each iteration).
// Two deploys are timed per iteration: to an empty disk (every non-zero chunk is fetched and
// written) and again to the same disk (every chunk is found in place and skipped), which is what
// re-imaging a classroom whose PCs drifted little costs.
package deploy

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
	"tms/workflows"
)

func BenchmarkDeploy(b *testing.B) {
	size := benchutil.DiskSize(b)
	dir, err := os.MkdirTemp(os.Getenv("TMS_BENCH_DIR"), "tms-bench-deploy-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: []string{"region-a"}, Terminals: 2, DiskSize: size, Log: benchutil.Log(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	src, _ := env.Terminal("a-pc1")
	dst, _ := env.Terminal("a-pc2")
	timeouts := workflows.AgentTimeouts{Silence: time.Minute, Tries: 1, Total: time.Hour}

	capStart := time.Now()
	capRun, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("region-a")},
		workflows.CaptureImage, workflows.CaptureImageInput{Region: "region-a", TerminalRef: src.Name, Image: "bench", Timeouts: timeouts})
	if err != nil {
		b.Fatal(err)
	}
	if err := capRun.Get(ctx, nil); err != nil {
		b.Fatal(err)
	}
	capture := time.Since(capStart)

	deploy := func() time.Duration {
		start := time.Now()
		run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("region-a")},
			workflows.DeployImage, workflows.DeployImageInput{Region: "region-a", Terminals: []string{dst.Name}, Image: "bench", Timeouts: timeouts})
		if err != nil {
			b.Fatal(err)
		}
		var res workflows.DeployImageResult
		if err := run.Get(ctx, &res); err != nil || res.Failed != 0 {
			b.Fatalf("deploy: %+v, %v", res, err)
		}
		return time.Since(start)
	}
	mb := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	for b.Loop() {
		b.StopTimer()
		cpDst := filepath.Join(dir, "cp.raw")
		benchutil.Run(b, "sync")
		cp := benchutil.Run(b, "cp", src.Disk, cpDst) + benchutil.Run(b, "sync")
		os.Remove(cpDst)
		// An empty disk of the same size, as a new PC's.
		if err := os.Truncate(dst.Disk, 0); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(dst.Disk, size); err != nil {
			b.Fatal(err)
		}
		benchutil.Run(b, "sync")
		b.StartTimer()
		stop := benchutil.Profile(b) // the first deploy only: the one measured against cp
		cpu := benchutil.CPUTime(b)
		full := deploy()
		cpu = benchutil.CPUTime(b) - cpu
		stop()
		same := deploy()
		b.StopTimer()
		b.ReportMetric(mb(full), "MB/s")
		b.ReportMetric(mb(cp), "cp_sync_MB/s")
		b.ReportMetric(cp.Seconds()/full.Seconds(), "vs_cp_sync")
		b.ReportMetric(same.Seconds(), "redeploy_s")
		// CPU of the whole process (region, agent, Temporal) during the deploy: on a shared
		// machine a steadier figure than its wall time.
		b.ReportMetric(cpu.Seconds(), "deploy_cpu_s")
		// The first capture of the sample disk (every non-zero chunk uploaded), once per run.
		b.ReportMetric(mb(capture), "capture_MB/s")
		b.ReportMetric(cp.Seconds()/capture.Seconds(), "capture_vs_cp_sync")
		b.StartTimer()
	}
}
