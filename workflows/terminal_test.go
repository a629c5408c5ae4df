package workflows

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/signing"
	"tms/state"
)

func newTerminalEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	env := newEnv(t)
	env.RegisterWorkflow(CaptureImage)
	env.RegisterWorkflow(DeployImage)
	env.RegisterWorkflow(DeployTerminal)
	return env
}

var pc1 = activities.TerminalRef{MAC: "52:54:00:00:00:01", Name: "pc1", DiskSize: 1 << 30}

func capture(t *testing.T, env *testsuite.TestWorkflowEnvironment) (CaptureImageResult, error) {
	t.Helper()
	env.ExecuteWorkflow(CaptureImage, CaptureImageInput{Region: "region-a", TerminalRef: "pc1", Image: "win11"})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res CaptureImageResult
	err := env.GetWorkflowError()
	if err == nil {
		env.GetWorkflowResult(&res)
	}
	return res, err
}

// finished matches the FinishTask input with the given state.
func finished(st state.TaskState) any {
	return mock.MatchedBy(func(in activities.FinishInput) bool { return in.State == st && in.MAC == pc1.MAC })
}

// TestCaptureRegistersTheNewVersion checks that a capture registers the version with central and
// stores central's signature in the region.
func TestCaptureRegistersTheNewVersion(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.MatchedBy(func(in activities.TaskInput) bool {
		return in.Kind == "capture" && in.TerminalRef == "pc1" && in.Image == "win11" && in.Task == "default-test-workflow-id@default-test-run-id" && !in.Expires.IsZero()
	})).Return(pc1, nil).Once()
	env.OnActivity(r.PowerTerminal, mock.Anything, activities.PowerInput{MAC: pc1.MAC, Command: "reboot"}).Return(nil).Once()
	env.OnActivity(r.WaitForAgent, mock.Anything, activities.WaitInput{Task: "default-test-workflow-id@default-test-run-id"}).
		Return(activities.AgentResult{Version: version, DiskSize: 1 << 30, StoredBytes: 1 << 20}, nil).Once()
	env.OnActivity(r.FinishTask, mock.Anything, activities.FinishInput{Task: "default-test-workflow-id@default-test-run-id", MAC: pc1.MAC, State: state.TaskDone, Version: version}).Return(nil).Once()
	info := activities.VersionInfo{Version: version, Name: "win11", DiskSize: 1 << 30, StoredBytes: 1 << 20}
	env.OnActivity(r.TagVersion, mock.Anything, activities.TagInput{Image: "win11", Tag: "latest", Version: version}).Return(nil).Once()
	env.OnActivity(r.DescribeVersion, mock.Anything, activities.VersionInput{Version: version}).Return(info, nil).Once()
	sig := signing.Signature{KeyID: "0011223344556677", Signature: make([]byte, 64)}
	env.OnActivity(c.RegisterVersion, mock.Anything, activities.RegisterVersionInput{Info: info, Tag: "latest", Region: "region-a"}).
		Return(activities.RegisterVersionResult{Signature: sig}, nil).Once()
	env.OnActivity(r.StoreSignature, mock.Anything, activities.StoreSignatureInput{Version: version, Signature: sig}).Return(nil).Once()
	res, err := capture(t, env)
	if err != nil || res.Version != version || res.StoredBytes != 1<<20 {
		t.Fatalf("%+v, %v", res, err)
	}
	env.AssertExpectations(t)
}

func TestCaptureOfAnUnknownTerminalTouchesNothing(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(activities.TerminalRef{},
		activities.ErrUnknownTerminal.New("region region-a has no terminal pc1", nil)).Once()
	_, err := capture(t, env)
	if err == nil || !strings.Contains(err.Error(), "has no terminal pc1") {
		t.Fatalf("error %v", err)
	}
	env.AssertExpectations(t)
	env.AssertNotCalled(t, "PowerTerminal", mock.Anything, mock.Anything)
	env.AssertNotCalled(t, "FinishTask", mock.Anything, mock.Anything)
}

func TestCaptureAgentFailureResetsTheBootAction(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(pc1, nil)
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).Return(activities.AgentResult{},
		activities.ErrAgentFailed.New("read /dev/sda at 1048576: input/output error", nil)).Once()
	env.OnActivity(r.FinishTask, mock.Anything, mock.MatchedBy(func(in activities.FinishInput) bool {
		return in.State == state.TaskFailed && strings.Contains(in.Error, "input/output error") && in.Version == ""
	})).Return(nil).Once()
	_, err := capture(t, env)
	if err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("error %v", err)
	}
	env.AssertExpectations(t)
	env.AssertNotCalled(t, "RegisterVersion", mock.Anything, mock.Anything)
}

func TestCaptureOfASilentTerminalFailsAfterItsTries(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(pc1, nil)
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	// The test environment does not retry a timeout the way the server does (that is covered on
	// a real server in package workers); what is checked here is the message once tries run out.
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).Return(activities.AgentResult{}, temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil))
	env.OnActivity(r.FinishTask, mock.Anything, finished(state.TaskFailed)).Return(nil).Once()
	_, err := capture(t, env)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != "TerminalSilent" || !strings.Contains(ae.Message(), "pc1 did not report") {
		t.Fatalf("error %v, want TerminalSilent", err)
	}
	env.AssertExpectations(t)
}

func TestCanceledCaptureResetsTheBootAction(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(pc1, nil)
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).After(time.Hour).Return(activities.AgentResult{}, nil)
	env.OnActivity(r.FinishTask, mock.Anything, finished(state.TaskCanceled)).Return(nil).Once()
	env.RegisterDelayedCallback(env.CancelWorkflow, time.Minute)
	_, err := capture(t, env)
	var ce *temporal.CanceledError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v, want canceled", err)
	}
	env.AssertExpectations(t)
}

// TestTerminalStepsAreLocalOnTheRegionsQueue checks that a terminal task on its region's own
// queue runs PowerTerminal and FinishTask as local activities (and sets up its task and waits
// for the agent with remote ones),
// also when it is canceled, and that one on another queue (central's: a bootenv canary) keeps
// them remote.
func TestTerminalStepsAreLocalOnTheRegionsQueue(t *testing.T) {
	for _, tc := range []struct {
		queue  string
		cancel bool
		local  []string
	}{
		{activities.RegionQueue("region-a"), false, []string{"PowerTerminal", "FinishTask"}},
		{activities.RegionQueue("region-a"), true, []string{"PowerTerminal", "FinishTask"}},
		{activities.CentralQueue, false, nil},
	} {
		env := newTerminalEnv(t)
		env.SetStartWorkflowOptions(client.StartWorkflowOptions{TaskQueue: tc.queue})
		var mu sync.Mutex
		var local, remote []string
		env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
			mu.Lock()
			defer mu.Unlock()
			local = append(local, info.ActivityType.Name)
		})
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			mu.Lock()
			defer mu.Unlock()
			remote = append(remote, info.ActivityType.Name)
		})
		env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(pc1, nil).Once()
		env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil).Once()
		wait := env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).Return(activities.AgentResult{Version: version}, nil).Once()
		want := state.TaskDone
		if tc.cancel {
			wait.After(time.Hour)
			want = state.TaskCanceled
			env.RegisterDelayedCallback(env.CancelWorkflow, time.Minute)
		}
		env.OnActivity(r.FinishTask, mock.Anything, finished(want)).Return(nil).Once()
		env.ExecuteWorkflow(DeployTerminal, DeployTerminalInput{Region: "region-a", TerminalRef: pc1.MAC, Version: version})
		if err := env.GetWorkflowError(); (err != nil) != tc.cancel {
			t.Fatalf("queue %s, canceled %v: %v", tc.queue, tc.cancel, err)
		}
		env.AssertExpectations(t)
		if !slices.Equal(local, tc.local) || !slices.Contains(remote, "WaitForAgent") || !slices.Contains(remote, "PrepareTask") {
			t.Errorf("queue %s, canceled %v: local activities %v, remote %v", tc.queue, tc.cancel, local, remote)
		}
	}
}

// locateWin11 matches LocateVersion of win11 for region-b: as the deploy asks (win11) or as its
// share child does (the version located, win11@VERSION).
var locateWin11 = mock.MatchedBy(func(in activities.LocateInput) bool {
	return in.Target == "region-b" && (in.Image == "win11" || in.Image == "win11@"+version)
})

// deployEnv mocks a region with terminals pc1..pcN; fail names terminals whose agent fails;
// writers is how many terminals the deploy must tell each task write at once.
func deployEnv(t *testing.T, n, writers int, fail map[string]bool) (*testsuite.TestWorkflowEnvironment, *int) {
	env := newTerminalEnv(t)
	var terms []activities.TerminalRef
	for i := range n {
		terms = append(terms, activities.TerminalRef{MAC: "52:54:00:00:00:0" + string(rune('1'+i)), Name: "pc" + string(rune('1'+i))})
	}
	env.OnActivity(r.ResolveTerminals, mock.Anything, activities.ResolveInput{Group: "lab"}).Return(activities.ResolveResult{Terminals: terms}, nil)
	env.OnActivity(c.LocateVersion, mock.Anything, locateWin11).Return(located("region-a"), nil)
	env.OnActivity(r.AwaitVersion, mock.Anything, activities.AwaitVersionInput{Version: version}).Return(activities.AwaitVersionResult{Arriving: true}, nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, mock.Anything).Return(activities.MoveResult{MovedBytes: 9}, nil)
	env.OnActivity(c.RecordLocation, mock.Anything, mock.Anything).Return(nil)
	byMAC := map[string]activities.TerminalRef{}
	for _, tr := range terms {
		byMAC[tr.MAC] = tr
	}
	var mu sync.Mutex
	running, most := 0, new(int)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.TaskInput) (activities.TerminalRef, error) {
		if in.Kind != "deploy" || in.Version != version || in.Image != "" || in.Writers != writers {
			t.Errorf("prepare %+v (want %d writers)", in, writers)
		}
		return byMAC[in.TerminalRef], nil
	})
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).After(time.Minute).Return(func(_ context.Context, in activities.WaitInput) (activities.AgentResult, error) {
		mu.Lock()
		running++
		*most = max(*most, running)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		time.Sleep(10 * time.Millisecond) // let other terminals' waits overlap this one
		for name := range fail {
			if id, _, _ := strings.Cut(in.Task, "@"); strings.HasSuffix(id, "/"+name) {
				return activities.AgentResult{}, activities.ErrAgentFailed.New("the disk is write-protected", nil)
			}
		}
		return activities.AgentResult{Written: 3, Skipped: 1, Verified: true}, nil
	})
	env.OnActivity(r.FinishTask, mock.Anything, mock.Anything).Return(nil)
	return env, most
}

func deploy(t *testing.T, env *testsuite.TestWorkflowEnvironment, in DeployImageInput) (DeployImageResult, error) {
	t.Helper()
	env.ExecuteWorkflow(DeployImage, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res DeployImageResult
	err := env.GetWorkflowError()
	if err == nil {
		env.GetWorkflowResult(&res)
	}
	return res, err
}

func TestDeployToAGroup(t *testing.T) {
	env, most := deployEnv(t, 5, 2, nil)
	res, err := deploy(t, env, DeployImageInput{Region: "region-b", Group: "lab", Image: "win11", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != version || res.Share.Path != "peer" || res.Failed != 0 || len(res.Terminals) != 5 {
		t.Fatalf("%+v", res)
	}
	for _, o := range res.Terminals {
		if !o.OK || o.Written != 3 || o.Skipped != 1 {
			t.Errorf("terminal %+v", o)
		}
	}
	if *most > 2 {
		t.Errorf("%d terminals deployed at once, limit 2", *most)
	}
}

func TestDeployGoesOnWhenOneTerminalFails(t *testing.T) {
	env, _ := deployEnv(t, 3, 3, map[string]bool{"pc2": true})
	res, err := deploy(t, env, DeployImageInput{Region: "region-b", Group: "lab", Image: "win11"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || !res.Terminals[0].OK || res.Terminals[1].OK || !res.Terminals[2].OK {
		t.Fatalf("%+v", res.Terminals)
	}
	if !strings.Contains(res.Terminals[1].Error, "write-protected") {
		t.Errorf("failure reported as %q", res.Terminals[1].Error)
	}
}

func TestDeployFailsWhenEveryTerminalFails(t *testing.T) {
	env, _ := deployEnv(t, 2, 2, map[string]bool{"pc1": true, "pc2": true})
	_, err := deploy(t, env, DeployImageInput{Region: "region-b", Group: "lab", Image: "win11"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != "DeployFailed" || !strings.Contains(ae.Message(), "pc1: the disk is write-protected") {
		t.Fatalf("error %v", err)
	}
}

func TestDeployStopsWhenTheImageCannotBeShared(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.ResolveTerminals, mock.Anything, mock.Anything).Return(activities.ResolveResult{Terminals: []activities.TerminalRef{pc1}}, nil)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(activities.LocateResult{},
		activities.ErrUnknownImage.New("image win11 is not in the catalog", nil))
	_, err := deploy(t, env, DeployImageInput{Region: "region-b", Group: "lab", Image: "win11"})
	if err == nil || !strings.Contains(err.Error(), "not in the catalog") {
		t.Fatalf("error %v", err)
	}
	env.AssertNotCalled(t, "PrepareTask", mock.Anything, mock.Anything)
}

func TestDeployToAnUnknownGroup(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.ResolveTerminals, mock.Anything, mock.Anything).Return(activities.ResolveResult{},
		activities.ErrUnknownGroup.New("region region-b has no group lab", nil))
	_, err := deploy(t, env, DeployImageInput{Region: "region-b", Group: "lab", Image: "win11"})
	if err == nil || !strings.Contains(err.Error(), "has no group lab") {
		t.Fatalf("error %v", err)
	}
	env.AssertNotCalled(t, "LocateVersion", mock.Anything, mock.Anything)
}

func TestWorkflowIDsAreReadable(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{CaptureWorkflowID("region-a", "pc1", "win11"), "capture/region-a/pc1/win11"},
		{DeployWorkflowID("region-b", "lab", nil, "win11:exam"), "deploy/region-b/lab/win11:exam"},
		{DeployWorkflowID("region-b", "", []string{"pc1", "pc2"}, "win11"), "deploy/region-b/pc1,pc2/win11"},
		{ShareWorkflowID("win11", "region-b"), "share/win11/region-b"},
	} {
		if c.got != c.want {
			t.Errorf("id %q, want %q", c.got, c.want)
		}
	}
}
