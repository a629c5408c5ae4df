package workflows

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/agentwire"
)

const oldBootEnv = "0bd0000000000000000000000000000000000000000000000000000000000011"

// rolloutEnv is a test environment for BootEnvRollout whose activities answer as two healthy
// regions would (canary a-pc1 in region-a, b-pc1 in region-b); calls lists the region
// activities as REGION:ACTIVITY in the order they started.
type rolloutEnv struct {
	*testsuite.TestWorkflowEnvironment
	mu    sync.Mutex
	calls []string
}

func newRolloutEnv(t *testing.T) *rolloutEnv {
	env := &rolloutEnv{TestWorkflowEnvironment: newEnv(t)}
	env.RegisterWorkflow(BootEnvRollout)
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		if q := info.TaskQueue; strings.HasPrefix(q, "region.") {
			env.mu.Lock()
			env.calls = append(env.calls, q[len("region."):]+":"+info.ActivityType.Name)
			env.mu.Unlock()
		}
	})
	env.OnWorkflow(ShareImage, mock.Anything, mock.MatchedBy(func(in ShareImageInput) bool {
		return in.Image == "bootenv.lab@"+version
	})).Return(ShareImageResult{Version: version}, nil)
	env.OnActivity(c.ResolveBootEnv, mock.Anything, activities.BootEnvInput{Version: version[:8]}).
		Return(activities.BootEnvInfo{Version: version, Name: "lab"}, nil)
	env.OnActivity(r.MaterializeBootEnv, mock.Anything, activities.BootEnvInput{Version: version}).Return(activities.BootEnvResult{Version: version}, nil)
	env.OnActivity(r.CurrentBootEnv, mock.Anything).Return(activities.CurrentBootEnvResult{Version: oldBootEnv}, nil)
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.FinishTask, mock.Anything, mock.Anything).Return(nil)
	return env
}

func (env *rolloutEnv) canaries(names ...string) {
	for _, n := range names {
		ref := activities.TerminalRef{MAC: "52:54:00:00:00:0" + n[:1], Name: n}
		env.OnActivity(r.PickCanary, mock.Anything, mock.Anything).Return(ref, nil).Once()
		env.OnActivity(r.PrepareTask, mock.Anything, mock.MatchedBy(func(in activities.TaskInput) bool {
			return in.Kind == agentwire.KindProbe && in.Version == version && in.TerminalRef == ref.MAC
		})).Return(ref, nil).Once()
	}
}

func (env *rolloutEnv) run(t *testing.T, in BootEnvRolloutInput) (BootEnvRolloutResult, error) {
	t.Helper()
	env.ExecuteWorkflow(BootEnvRollout, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res BootEnvRolloutResult
	err := env.GetWorkflowError()
	if err == nil {
		env.GetWorkflowResult(&res)
	}
	return res, err
}

func (env *rolloutEnv) called() string {
	env.mu.Lock()
	defer env.mu.Unlock()
	return strings.Join(env.calls, " ")
}

func TestRolloutGoesRegionByRegionBehindACanary(t *testing.T) {
	env := newRolloutEnv(t)
	env.canaries("b-pc1", "a-pc1")
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).Return(activities.AgentResult{Version: version, BootEnv: version, AgentVersion: "v2"}, nil).Twice()
	env.OnActivity(r.SetBootEnv, mock.Anything, mock.MatchedBy(func(in activities.SetBootEnvInput) bool {
		return in.Version == version && in.By == "ana" && in.Task == "default-test-workflow-id"
	})).Return(nil).Twice()
	var recorded []string
	env.OnActivity(c.RecordRegionBootEnv, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.RegionBootEnvInput) error {
		recorded = append(recorded, in.Region+"="+in.Version[:4])
		return nil
	}).Twice()
	// The order given, not sorted.
	res, err := env.run(t, BootEnvRolloutInput{Version: version[:8], Regions: []string{"region-b", "region-a"}, By: "ana"})
	if err != nil {
		t.Fatal(err)
	}
	one := "MaterializeBootEnv %[1]s:CurrentBootEnv %[1]s:PickCanary %[1]s:PrepareTask %[1]s:PowerTerminal %[1]s:WaitForAgent %[1]s:FinishTask %[1]s:SetBootEnv"
	want := "region-b:" + strings.ReplaceAll(one, "%[1]s", "region-b") + " region-a:" + strings.ReplaceAll(one, "%[1]s", "region-a")
	if got := env.called(); got != want {
		t.Fatalf("region activities:\n%s\nwant\n%s", got, want)
	}
	if strings.Join(recorded, " ") != "region-b=91bc region-a=91bc" {
		t.Fatalf("central recorded %v", recorded)
	}
	if res.Version != version || res.Name != "lab" || len(res.Regions) != 2 || res.Regions[0].Phase != RolloutDone || res.Regions[1].Phase != RolloutDone ||
		res.Regions[0].Canary != "b-pc1" || res.Regions[0].Previous != oldBootEnv || res.Regions[0].AgentVersion != "v2" {
		t.Fatalf("result %+v", res)
	}
}

func TestRolloutStopsAtACanaryThatFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result activities.AgentResult
		err    error
		says   string
	}{
		{name: "does not come back", err: temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil), says: "canary a-pc1 did not come back from bootenv 91bc00000000 within 3m0s"},
		{name: "comes back with another version", result: activities.AgentResult{BootEnv: oldBootEnv, AgentVersion: "v1"},
			says: "canary a-pc1 came back from bootenv 0bd000000000, not bootenv 91bc00000000 (agent v1)"},
		{name: "comes back from the plain boot directory", result: activities.AgentResult{},
			says: "canary a-pc1 came back from the plain boot directory (or an agent too old to report its bootenv), not bootenv 91bc00000000 (agent none)"},
		{name: "its agent fails", err: activities.ErrAgentFailed.New("terminal a-pc1: kernel panic", nil), says: "canary a-pc1 did not come back from bootenv 91bc00000000 within 3m0s: terminal a-pc1: kernel panic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newRolloutEnv(t)
			env.canaries("a-pc1")
			env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).Return(tc.result, tc.err).Once()
			_, err := env.run(t, BootEnvRolloutInput{Version: version[:8], Regions: []string{"region-a", "region-b"}, CanaryTimeout: 3 * time.Minute})
			if !activities.ErrCanaryFailed.Matches(err) || !strings.Contains(err.Error(), "region region-a: "+tc.says) ||
				!strings.Contains(err.Error(), "the region keeps its previous bootenv "+oldBootEnv) {
				t.Fatalf("err %v\nwant CanaryFailed saying %q", err, tc.says)
			}
			// The canary's probe was ended (its boot action back to its own disk), the region
			// kept its version and the next region was not touched.
			got := env.called()
			if strings.Contains(got, "SetBootEnv") || strings.Contains(got, "region-b") || !strings.HasSuffix(got, "region-a:FinishTask") {
				t.Fatalf("region activities: %s", got)
			}
			env.AssertNotCalled(t, "RecordRegionBootEnv", mock.Anything, mock.Anything)
		})
	}
}

func TestRolloutWithoutACanaryFailsForThatRegion(t *testing.T) {
	env := newRolloutEnv(t)
	env.OnActivity(r.PickCanary, mock.Anything, activities.CanaryInput{Candidates: []string{"x-pc9"}}).
		Return(activities.TerminalRef{}, activities.ErrNoCanary.New("region region-a has no enrolled terminal to try the new in-memory OS on", nil)).Once()
	_, err := env.run(t, BootEnvRolloutInput{Version: version[:8], Regions: []string{"region-a", "region-b"}, Canaries: []string{"region-b=b-pc2", "x-pc9"}})
	if !activities.ErrNoCanary.Matches(err) || !strings.Contains(err.Error(), "region region-a has no enrolled terminal") {
		t.Fatalf("err %v", err)
	}
	if got := env.called(); got != "region-a:MaterializeBootEnv region-a:CurrentBootEnv region-a:PickCanary" {
		t.Fatalf("region activities: %s", got)
	}
}

func TestRolloutToEveryRegionGoesInOrderOfTheirIds(t *testing.T) {
	env := newRolloutEnv(t)
	env.OnActivity(c.ListRegions, mock.Anything).Return(activities.ListRegionsResult{Regions: []activities.RegionInfo{{ID: "region-b"}, {ID: "region-a"}}}, nil)
	env.canaries("a-pc1", "b-pc1")
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).Return(activities.AgentResult{BootEnv: version}, nil).Twice()
	env.OnActivity(r.SetBootEnv, mock.Anything, mock.Anything).Return(nil).Twice()
	env.OnActivity(c.RecordRegionBootEnv, mock.Anything, mock.Anything).Return(nil).Twice()
	res, err := env.run(t, BootEnvRolloutInput{Version: version[:8]})
	if err != nil || len(res.Regions) != 2 || res.Regions[0].Region != "region-a" || res.Regions[1].Region != "region-b" {
		t.Fatalf("%+v %v", res, err)
	}
	if got := env.called(); !strings.HasPrefix(got, "region-a:") || !strings.HasSuffix(got, "region-b:SetBootEnv") {
		t.Fatalf("region activities: %s", got)
	}
}

func TestCanaryFor(t *testing.T) {
	for _, tc := range []struct {
		canaries []string
		region   string
		want     activities.CanaryInput
	}{
		{nil, "region-a", activities.CanaryInput{}},
		{[]string{"region-a=pc3", "pc9"}, "region-a", activities.CanaryInput{Terminal: "pc3"}},
		{[]string{"region-a=pc3", "pc9", "pc8"}, "region-b", activities.CanaryInput{Candidates: []string{"pc9", "pc8"}}},
	} {
		got := canaryFor(tc.canaries, tc.region)
		if got.Terminal != tc.want.Terminal || strings.Join(got.Candidates, ",") != strings.Join(tc.want.Candidates, ",") {
			t.Errorf("canaryFor(%v, %s) = %+v, want %+v", tc.canaries, tc.region, got, tc.want)
		}
	}
}
