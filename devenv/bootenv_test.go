package devenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/bootenv"
	"tms/devenv"
	"tms/internal/storetest"
	"tms/server"
	"tms/workflows"
)

func startNetBoot(t *testing.T, regions ...string) *devenv.Env {
	t.Helper()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: regions, Terminals: 2, DiskSize: 16 << 20, NetBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Stop)
	return env
}

// publishBootEnv publishes dir into region's store and has central sign it, as tms bootenv
// publish does.
func publishBootEnv(t *testing.T, env *devenv.Env, region, dir string, o bootenv.PublishOptions) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := bootenv.Publish(ctx, env.RegionStore(region), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	v := res.Version
	info := activities.VersionInfo{Version: v.ID.String(), Name: res.Image, Created: v.Manifest.Meta.Created, DiskSize: v.Manifest.DiskSize,
		ChunkSize: v.Manifest.ChunkSize, StoredBytes: res.Import.Stats.StoredBytes}
	run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.CentralQueue}, workflows.PublishBootEnv,
		activities.RegisterBootEnvInput{Info: info, Region: region, KernelVersion: res.Info.KernelVersion, AgentVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return v.ID.String()
}

func sampleBootEnv(t *testing.T, kernel string) string {
	dir := t.TempDir()
	if err := bootenv.WriteSample(dir, kernel); err != nil {
		t.Fatal(err)
	}
	return dir
}

func rollout(t *testing.T, env *devenv.Env, in workflows.BootEnvRolloutInput) client.WorkflowRun {
	t.Helper()
	run, err := env.Client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: workflows.BootEnvRolloutWorkflowID(in.Version),
		TaskQueue: activities.CentralQueue}, workflows.BootEnvRollout, in)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

func bootEnvOf(t *testing.T, r *server.Region) server.BootEnvStatus {
	t.Helper()
	st, err := r.BootEnv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestBootEnvRolloutBehindACanary publishes a bootenv in region-a and rolls it out to region-a
// then region-b: in each region a canary, a simulated terminal that network boots (fetches and
// checks the kernel and initrd its iPXE script names), says it booted the version, and only then
// does the region switch. A broken bootenv published after it stops at region-a's canary and
// region-a keeps the first.
func TestBootEnvRolloutBehindACanary(t *testing.T) {
	env := startNetBoot(t, "region-a", "region-b")
	good := publishBootEnv(t, env, "region-a", sampleBootEnv(t, "6.12.0-1-amd64"), bootenv.PublishOptions{Name: "lab"})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run := rollout(t, env, workflows.BootEnvRolloutInput{Version: good[:10], Regions: []string{"region-a", "region-b"}, Canaries: []string{"b-pc2"},
		CanaryTimeout: time.Minute, By: "test"})
	var res workflows.BootEnvRolloutResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("rollout: %v", err)
	}
	history(t, env, run.GetID(), "rollout")
	if len(res.Regions) != 2 || res.Regions[0].Region != "region-a" || res.Regions[0].Phase != workflows.RolloutDone || res.Regions[1].Phase != workflows.RolloutDone ||
		res.Regions[1].Canary != "b-pc2" || !strings.HasPrefix(res.Regions[0].Canary, "a-pc") || res.Regions[0].AgentVersion == "" {
		t.Fatalf("rollout result %+v", res)
	}
	for _, id := range []string{"region-a", "region-b"} {
		if st := bootEnvOf(t, env.Regions[id]); st.Current != good || !st.Ready {
			t.Fatalf("%s after the rollout: %+v", id, st)
		}
		if _, err := os.Stat(filepath.Join(env.Regions[id].BootEnvs.Dir, good, bootenv.InitrdFile)); err != nil {
			t.Fatalf("%s did not materialize the version: %v", id, err)
		}
	}

	// A kernel that is not a bzImage: the canary's network boot hangs, the rollout stops.
	broken := sampleBootEnv(t, "6.13.0-1-amd64")
	if err := os.WriteFile(filepath.Join(broken, bootenv.KernelFile), []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := publishBootEnv(t, env, "region-a", broken, bootenv.PublishOptions{Name: "lab", Force: true})
	run = rollout(t, env, workflows.BootEnvRolloutInput{Version: bad, Regions: []string{"region-a", "region-b"}, Canaries: []string{"region-a=a-pc1"},
		CanaryTimeout: 15 * time.Second})
	err := run.Get(ctx, &res)
	if !activities.ErrCanaryFailed.Matches(err) || !strings.Contains(err.Error(), "region region-a: canary a-pc1 did not come back from bootenv "+bad[:12]) ||
		!strings.Contains(err.Error(), "keeps its previous bootenv "+good) {
		t.Fatalf("rollout of a broken bootenv: %v", err)
	}
	history(t, env, run.GetID(), "rollout")
	for _, id := range []string{"region-a", "region-b"} {
		if st := bootEnvOf(t, env.Regions[id]); st.Current != good {
			t.Fatalf("%s after the broken rollout: %+v", id, st)
		}
	}
}

// TestBootEnvRolloutSurvivesARestartOfCentral restarts central while the rollout waits for its
// canary: the rollout goes on and ends well.
func TestBootEnvRolloutSurvivesARestartOfCentral(t *testing.T) {
	env := startNetBoot(t, "region-a")
	v := publishBootEnv(t, env, "region-a", sampleBootEnv(t, "6.12.0-1-amd64"), bootenv.PublishOptions{})
	// The canary is unplugged until central has restarted: the rollout waits for it then.
	env.StopAgent("a-pc1")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run := rollout(t, env, workflows.BootEnvRolloutInput{Version: v, Canaries: []string{"a-pc1"}, CanaryTimeout: 2 * time.Minute})
	deadline := time.Now().Add(time.Minute)
	for {
		var p workflows.BootEnvRolloutResult
		if q, err := env.Client.QueryWorkflow(ctx, run.GetID(), "", workflows.QueryProgress); err == nil && q.Get(&p) == nil &&
			len(p.Regions) == 1 && p.Regions[0].Phase == workflows.RolloutProbing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rollout did not reach its canary")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := env.RestartCentral(ctx); err != nil {
		t.Fatal(err)
	}
	env.StartAgent("a-pc1")
	var res workflows.BootEnvRolloutResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("rollout across a restart of central: %v", err)
	}
	history(t, env, run.GetID(), "rollout")
	if st := bootEnvOf(t, env.Regions["region-a"]); st.Current != v {
		t.Fatalf("region-a after the rollout: %+v", st)
	}
}

// TestNetBootCaptureAndDeploy captures and deploys with simulated network boots: first from the
// region's plain boot directory (nothing published), then from a bootenv rolled out to it.
func TestNetBootCaptureAndDeploy(t *testing.T) {
	env := startNetBoot(t, "region-a")
	src, _ := env.Terminal("a-pc1")
	want := storetest.FileSum(t, src.Disk)
	cap := capture(t, env, "region-a", "a-pc1", "classroom")

	v := publishBootEnv(t, env, "region-a", sampleBootEnv(t, "6.12.0-1-amd64"), bootenv.PublishOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := rollout(t, env, workflows.BootEnvRolloutInput{Version: v, Canaries: []string{"a-pc1"}, CanaryTimeout: time.Minute}).Get(ctx, nil); err != nil {
		t.Fatalf("rollout: %v", err)
	}
	res := deploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc2"}, Image: "classroom@" + cap.Version})
	if res.Failed != 0 || len(res.Terminals) != 1 {
		t.Fatalf("deploy: %+v", res)
	}
	dst, _ := env.Terminal("a-pc2")
	if storetest.FileSum(t, dst.Disk) != want {
		t.Fatal("a-pc2 differs from the captured disk")
	}
}
