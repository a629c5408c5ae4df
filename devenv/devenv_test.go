package devenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/agentwire"
	"tms/config"
	"tms/devenv"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/internal/temporaltest"
	"tms/manifest"
	"tms/state"
	"tms/workflows"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// stateOf keeps the databases of each data directory start was given (TMS_TEST_DATABASE=postgres),
// so that starting again on a directory finds its state, as it does in SQLite files there.
var stateOf sync.Map // dir → func(server string) string

func start(t *testing.T, dir string, regions ...string) *devenv.Env {
	t.Helper()
	db, _ := stateOf.LoadOrStore(dir, pgtest.StateFunc(t))
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: regions, Terminals: 3, DiskSize: 16 << 20, Database: db.(func(string) string)})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

var quick = workflows.AgentTimeouts{Silence: 20 * time.Second, Tries: 3, Total: 5 * time.Minute}

func capture(t *testing.T, env *devenv.Env, region, terminal, image string) workflows.CaptureImageResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.CaptureWorkflowID(region, terminal, image),
		TaskQueue: activities.RegionQueue(region)}, workflows.CaptureImage,
		workflows.CaptureImageInput{Region: region, TerminalRef: terminal, Image: image, Timeouts: quick})
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.CaptureImageResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("capture: %v", err)
	}
	history(t, env, run.GetID(), "capture")
	return res
}

func startDeploy(t *testing.T, env *devenv.Env, in workflows.DeployImageInput) client.WorkflowRun {
	t.Helper()
	if in.Timeouts == (workflows.AgentTimeouts{}) {
		in.Timeouts = quick
	}
	run, err := env.Client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: workflows.DeployWorkflowID(in.Region, in.Group, in.Terminals, in.Image), TaskQueue: activities.RegionQueue(in.Region)},
		workflows.DeployImage, in)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

func deploy(t *testing.T, env *devenv.Env, in workflows.DeployImageInput) workflows.DeployImageResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var res workflows.DeployImageResult
	run := startDeploy(t, env, in)
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	history(t, env, run.GetID(), "deploy")
	for _, tr := range res.Terminals {
		history(t, env, run.GetID()+"/"+tr.Name, "deploy-terminal")
	}
	return res
}

// history saves a finished workflow's history for the replay test in workflows, named after
// the test, what it is and a counter (see temporaltest.SaveHistory).
func history(t *testing.T, env *devenv.Env, id, what string) {
	t.Helper()
	histories[t.Name()+what]++
	name := fmt.Sprintf("%s-%s-%d", strings.TrimPrefix(t.Name(), "Test"), what, histories[t.Name()+what])
	temporaltest.SaveHistory(t, env.Client, id, "", strings.ReplaceAll(name, "/", "-"))
}

var histories = map[string]int{}

func terminalsOf(env *devenv.Env, region string) []devenv.Terminal {
	var out []devenv.Terminal
	for _, t := range env.Terminals {
		if t.Region == region {
			out = append(out, t)
		}
	}
	return out
}

// TestCaptureShareDeploy is the whole flow on one machine: capture the sample terminal of
// region-a, deploy the image to region-b's group (a peer pull), then to region-c with every
// peer unreachable (a relay through central's storage); every disk ends byte-identical to the
// captured one, and the catalog knows every verified copy.
func TestCaptureShareDeploy(t *testing.T) {
	env := start(t, t.TempDir(), "region-a", "region-b", "region-c")
	defer env.Stop()
	ctx := context.Background()
	src, _ := env.Terminal("a-pc1")
	want := storetest.FileSum(t, src.Disk)

	cap := capture(t, env, "region-a", "a-pc1", "classroom")
	id, err := manifest.ParseID(cap.Version)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := env.Central.Catalog.Resolve(ctx, "classroom"); err != nil || got != id {
		t.Fatalf("catalog resolves classroom to %v, %v; want %s", got.Short(), err, id.Short())
	}
	if tm, err := env.Regions["region-a"].Inventory.Terminal(ctx, "a-pc1"); err != nil || tm.Version != id {
		t.Fatalf("a-pc1 holds %v (%v), want %s", tm.Version.Short(), err, id.Short())
	}
	// Central signed the version, and the signature is in region-a's store and its catalog.
	signed(t, env, "region-a", id)
	if vs, err := env.Central.Catalog.Versions(ctx); err != nil || len(vs) != 1 || vs[0].KeyID != env.CentralKey.ID() {
		t.Fatalf("catalog versions %+v (%v), want one signed by %s", vs, err, env.CentralKey.ID())
	}
	// Capturing again moves nothing new and gives the same version.
	if again := capture(t, env, "region-a", "a-pc1", "classroom"); again.Version != cap.Version {
		t.Fatalf("second capture gave %s, want %s", again.Version, cap.Version)
	}

	res := deploy(t, env, workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "classroom"})
	if res.Share.Path != "peer" || res.Share.Source != "region-a" || res.Failed != 0 || len(res.Terminals) != 3 {
		t.Fatalf("deploy to region-b: %+v", res)
	}
	for _, tm := range terminalsOf(env, "region-b") {
		if storetest.FileSum(t, tm.Disk) != want {
			t.Errorf("%s differs from the captured disk", tm.Name)
		}
	}
	signed(t, env, "region-b", id)

	// Every peer unreachable: the image travels through central's relay storage.
	for _, r := range []string{"region-a", "region-b"} {
		reg, err := env.Central.Catalog.GetRegion(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		reg.Endpoint = "http://127.0.0.1:1"
		if err := env.Central.Catalog.UpsertRegion(ctx, reg); err != nil {
			t.Fatal(err)
		}
	}
	res = deploy(t, env, workflows.DeployImageInput{Region: "region-c", Terminals: []string{"c-pc1", "c-pc2"}, Image: "classroom@" + id.Short()})
	if res.Share.Path != "relay" || res.Failed != 0 || len(res.Terminals) != 2 {
		t.Fatalf("deploy to region-c: %+v", res)
	}
	for _, name := range []string{"c-pc1", "c-pc2"} {
		tm, _ := env.Terminal(name)
		if storetest.FileSum(t, tm.Disk) != want {
			t.Errorf("%s differs from the captured disk", name)
		}
	}
	signed(t, env, "region-c", id)
	locs, err := env.Central.Catalog.Locations(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var verified []string
	for _, l := range locs {
		if l.State == state.Verified {
			verified = append(verified, l.Region.ID)
		}
	}
	if strings.Join(verified, ",") != "region-a,region-b,region-c" {
		t.Errorf("verified copies in %v", verified)
	}
}

// signed checks that region's store holds version id with a signature by central's key.
func signed(t *testing.T, env *devenv.Env, region string, id manifest.ID) {
	t.Helper()
	ctx := context.Background()
	st := env.Regions[region].Store
	v, err := st.GetManifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := st.GetSignature(ctx, id)
	if err != nil {
		t.Fatalf("%s: version %s has no signature: %v", region, id.Short(), err)
	}
	if err := env.CentralKey.VerifyManifest(id, v.Encoded, sig); err != nil {
		t.Fatalf("%s: %v", region, err)
	}
}

// TestUnsignedVersionIsNotDeployed puts a version in a region's store and central's catalog
// without central's signature, as a store copied by hand would be: the deploy refuses every
// terminal, saying why, and no disk is touched.
func TestUnsignedVersionIsNotDeployed(t *testing.T) {
	env := start(t, t.TempDir(), "region-a")
	defer env.Stop()
	ctx := context.Background()
	a := env.Regions["region-a"]
	imp := storetest.Import(t, a.Store, storetest.SampleDisk(t, 8<<20, 5), "unsigned")
	v := imp.Version
	if err := env.Central.Catalog.RecordVersion(ctx, state.Version{ID: v.ID, Name: "unsigned", Created: v.Manifest.Meta.Created,
		DiskSize: v.Manifest.DiskSize, ChunkSize: v.Manifest.ChunkSize}, "latest"); err != nil {
		t.Fatal(err)
	}
	if err := env.Central.Catalog.SetLocation(ctx, v.ID, "region-a", state.Verified); err != nil {
		t.Fatal(err)
	}
	tm, _ := env.Terminal("a-pc2")
	before := storetest.FileSum(t, tm.Disk)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := startDeploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc2"}, Image: "unsigned", Timeouts: quick}).Get(ctx, nil)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || !strings.Contains(ae.Error(), "a-pc2: version "+v.ID.Short()+" of unsigned is not signed by central") {
		t.Fatalf("deploy of an unsigned version: %v", err)
	}
	if storetest.FileSum(t, tm.Disk) != before {
		t.Fatal("a-pc2's disk changed")
	}
}

// TestSilentTerminal deploys to a group where one terminal is off: that terminal fails with a
// message saying so, the others are deployed, and the silent one's boot action is reset.
func TestSilentTerminal(t *testing.T) {
	env := start(t, t.TempDir(), "region-a")
	defer env.Stop()
	capture(t, env, "region-a", "a-pc1", "lab-image")
	env.StopAgent("a-pc3")
	res := deploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc2", "a-pc3"}, Image: "lab-image",
		Timeouts: workflows.AgentTimeouts{Silence: 2 * time.Second, Tries: 2, Total: time.Minute}})
	if res.Failed != 1 || !res.Terminals[0].OK || res.Terminals[1].OK {
		t.Fatalf("%+v", res.Terminals)
	}
	if !strings.Contains(res.Terminals[1].Error, "a-pc3 did not report") {
		t.Errorf("a-pc3's failure: %q", res.Terminals[1].Error)
	}
	a, err := env.Regions["region-a"].Inventory.BootAction(context.Background(), res.Terminals[1].MAC, time.Now())
	if err != nil || a.Action != "local" {
		t.Errorf("a-pc3's boot action after the failure: %+v, %v", a, err)
	}
}

// TestRestartMidDeploy stops everything while terminals are being written and starts again on
// the same data directory: the deploy resumes and finishes, and the disks are right.
func TestRestartMidDeploy(t *testing.T) {
	dir := t.TempDir()
	env := start(t, dir, "region-a")
	src, _ := env.Terminal("a-pc1")
	want := storetest.FileSum(t, src.Disk)
	capture(t, env, "region-a", "a-pc1", "lab-image")
	run := startDeploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc2", "a-pc3"}, Image: "lab-image"})
	// Wait until an agent is at work, then stop everything at once.
	deadline := time.Now().Add(time.Minute)
	for {
		tasks, err := env.Regions["region-a"].Inventory.Tasks(context.Background(), "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) > 0 && tasks[0].Kind == "deploy" && tasks[0].State == state.TaskRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no deploy task started running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	env.Stop()

	env = start(t, dir, "region-a")
	defer env.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var res workflows.DeployImageResult
	if err := env.Client.GetWorkflow(ctx, run.GetID(), "").Get(ctx, &res); err != nil {
		t.Fatalf("deploy after restart: %v", err)
	}
	if res.Failed != 0 {
		t.Fatalf("%+v", res)
	}
	for _, name := range []string{"a-pc2", "a-pc3"} {
		tm, _ := env.Terminal(name)
		if storetest.FileSum(t, tm.Disk) != want {
			t.Errorf("%s differs from the captured disk", name)
		}
	}
}

// TestAgentKilledMidTask stops a terminal's agent at once (as if the PC lost power) while it
// deploys, and starts it again: it boots, gets a new token for the same task and finishes, and
// the disk is right. The same for a capture.
func TestAgentKilledMidTask(t *testing.T) {
	env := start(t, t.TempDir(), "region-a")
	defer env.Stop()
	ctx := context.Background()
	src, _ := env.Terminal("a-pc1")
	want := storetest.FileSum(t, src.Disk)
	inv := env.Regions["region-a"].Inventory
	running := func(kind agentwire.Kind) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			tasks, err := inv.Tasks(ctx, "", 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(tasks) > 0 && tasks[0].Kind == kind && tasks[0].State != state.TaskWaiting {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s task started running", kind)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	capRun, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.CaptureWorkflowID("region-a", "a-pc1", "lab-image"),
		TaskQueue: activities.RegionQueue("region-a")}, workflows.CaptureImage,
		workflows.CaptureImageInput{Region: "region-a", TerminalRef: "a-pc1", Image: "lab-image", Timeouts: quick})
	if err != nil {
		t.Fatal(err)
	}
	running("capture")
	env.StopAgent("a-pc1")
	env.StartAgent("a-pc1")
	if err := capRun.Get(ctx, nil); err != nil {
		t.Fatalf("capture after the agent's restart: %v", err)
	}

	run := startDeploy(t, env, workflows.DeployImageInput{Region: "region-a", Terminals: []string{"a-pc2"}, Image: "lab-image"})
	running("deploy")
	env.StopAgent("a-pc2")
	env.StartAgent("a-pc2")
	var res workflows.DeployImageResult
	if err := run.Get(ctx, &res); err != nil || res.Failed != 0 {
		t.Fatalf("deploy after the agent's restart: %+v, %v", res, err)
	}
	tm, _ := env.Terminal("a-pc2")
	if storetest.FileSum(t, tm.Disk) != want {
		t.Error("a-pc2 differs from the captured disk")
	}
}

// TestBadInputEndsClearly checks the errors an admin gets for mistakes.
func TestBadInputEndsClearly(t *testing.T) {
	env := start(t, t.TempDir(), "region-a")
	defer env.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The region registered its time zone (the server's local one: no region.timezone here),
	// which schedules for it are written in.
	if reg, err := env.Central.Catalog.GetRegion(ctx, "region-a"); err != nil || reg.Timezone != config.LocalZone() {
		t.Fatalf("region-a in the catalog: %+v, %v; want time zone %s", reg, err, config.LocalZone())
	}
	for _, tc := range []struct {
		name string
		wf   any
		in   any
		want string
	}{
		{"unknown terminal", workflows.CaptureImage, workflows.CaptureImageInput{Region: "region-a", TerminalRef: "nope", Image: "x"}, "region region-a has no terminal nope"},
		{"bad image name", workflows.CaptureImage, workflows.CaptureImageInput{Region: "region-a", TerminalRef: "a-pc1", Image: "Bad Name"}, "image name"},
		{"unknown group", workflows.DeployImage, workflows.DeployImageInput{Region: "region-a", Group: "nope", Image: "x"}, "region region-a has no group nope"},
		{"unknown image", workflows.DeployImage, workflows.DeployImageInput{Region: "region-a", Group: "lab", Image: "never-captured"}, "never-captured is not in the catalog"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: activities.RegionQueue("region-a")}, tc.wf, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			err = run.Get(ctx, nil)
			var ae *temporal.ApplicationError
			if !errors.As(err, &ae) || !strings.Contains(ae.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
