// Package arriving measures a deploy that starts while its image still arrives in the region:
// region-b's WAN transfers are capped (region.wan_rate, $TMS_ARRIVING_RATE bytes a second,
// default 2 MB/s), so the share of a freshly captured image from region-a takes a WAN's time on
// loopback; a deploy of that image to region-b's terminals starts at once. The baseline is the
// share's own time in the same run (its child workflow's start to end): the deploy's whole time
// over it is the figure (aim ≤ 1.2). Run it with scripts/bench arriving. The last line is:
//
//	arriving terminals=N share_s=… deploy_s=… ratio=…
package arriving

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devenv"
	"tms/internal/benchutil"
	"tms/internal/sampledisk"
	"tms/workflows"
)

func BenchmarkDeployWhileArriving(b *testing.B) {
	rate := int64(2_000_000)
	if v, err := strconv.ParseInt(os.Getenv("TMS_ARRIVING_RATE"), 10, 64); err == nil && v > 0 {
		rate = v
	}
	const terminals = 3
	dir, err := os.MkdirTemp(os.Getenv("TMS_BENCH_DIR"), "tms-bench-arriving-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: []string{"region-a", "region-b"}, Terminals: terminals, DiskSize: 64 << 20, Log: benchutil.Log(b),
		WANRateOf: map[string]int64{"region-b": rate}})
	if err != nil {
		b.Fatal(err)
	}
	defer env.Stop()
	src, _ := env.Terminal("a-pc1")
	timeouts := workflows.AgentTimeouts{Silence: time.Minute, Tries: 1, Total: time.Hour}
	for i := 0; i < b.N; i++ {
		// A new image each iteration: region-b must not hold it yet.
		if err := sampledisk.Write(src.Disk, sampledisk.Options{Size: 64 << 20, Seed: uint64(1000 + i)}); err != nil {
			b.Fatal(err)
		}
		image := fmt.Sprintf("bench%d", i)
		run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("region-a")},
			workflows.CaptureImage, workflows.CaptureImageInput{Region: "region-a", TerminalRef: src.Name, Image: image, Timeouts: timeouts})
		if err != nil {
			b.Fatal(err)
		}
		if err := run.Get(ctx, nil); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		run, err = env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("region-b")},
			workflows.DeployImage, workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: image, Timeouts: timeouts})
		if err != nil {
			b.Fatal(err)
		}
		var res workflows.DeployImageResult
		if err := run.Get(ctx, &res); err != nil {
			b.Fatal(err)
		}
		deploy := time.Since(start)
		if res.Failed != 0 || len(res.Terminals) != terminals {
			b.Fatalf("deploy: %+v", res)
		}
		d, err := env.Client.DescribeWorkflowExecution(ctx, run.GetID()+"/share", "")
		if err != nil {
			b.Fatal(err)
		}
		info := d.GetWorkflowExecutionInfo()
		share := info.GetCloseTime().AsTime().Sub(info.GetStartTime().AsTime())
		b.ReportMetric(deploy.Seconds()/share.Seconds(), "deploy/share")
		fmt.Printf("arriving terminals=%d share_s=%.1f deploy_s=%.1f ratio=%.2f\n", terminals, share.Seconds(), deploy.Seconds(), deploy.Seconds()/share.Seconds())
	}
}
