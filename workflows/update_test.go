package workflows

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/agentwire"
)

const baseVersion = "81bc0000000000000000000000000000000000000000000000000000000000bb"

// updateEnv mocks a region with terminals pc1..pcN whose decisions are given; fail names
// terminals whose agent fails. It records the task inputs PrepareTask saw, by terminal MAC.
func updateEnv(t *testing.T, decisions []activities.Decision, fail map[string]bool) (*testsuite.TestWorkflowEnvironment, map[string]activities.TaskInput) {
	env := newEnv(t)
	env.RegisterWorkflow(UpdateImage)
	env.RegisterWorkflow(UpdateTerminal)
	var terms []activities.TerminalRef
	var decided activities.DecideResult
	for i, d := range decisions {
		tr := activities.TerminalRef{MAC: "52:54:00:00:00:0" + string(rune('1'+i)), Name: "pc" + string(rune('1'+i))}
		terms = append(terms, tr)
		td := activities.TerminalDecision{MAC: tr.MAC, Decision: d, Reason: "because " + string(d)}
		if d == activities.DecisionIncremental {
			td.Base = baseVersion
		}
		decided.Terminals = append(decided.Terminals, td)
	}
	env.OnActivity(r.ResolveTerminals, mock.Anything, activities.ResolveInput{Group: "lab"}).Return(activities.ResolveResult{Terminals: terms}, nil)
	env.OnActivity(c.LocateVersion, mock.Anything, locateWin11).Return(located("region-a"), nil)
	env.OnActivity(r.AwaitVersion, mock.Anything, activities.AwaitVersionInput{Version: version}).Return(activities.AwaitVersionResult{Arriving: true}, nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, mock.Anything).Return(activities.MoveResult{MovedBytes: 9}, nil)
	env.OnActivity(c.RecordLocation, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.DecideUpdate, mock.Anything, activities.DecideInput{Version: version, Terminals: terms}).Return(decided, nil)
	byMAC := map[string]activities.TerminalRef{}
	for _, tr := range terms {
		byMAC[tr.MAC] = tr
	}
	var mu sync.Mutex
	prepared := map[string]activities.TaskInput{}
	kinds := map[string]agentwire.Kind{}
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.TaskInput) (activities.TerminalRef, error) {
		mu.Lock()
		prepared[in.TerminalRef] = in
		id, _, _ := strings.Cut(in.Task, "@")
		kinds[id] = in.Kind
		mu.Unlock()
		return byMAC[in.TerminalRef], nil
	})
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).After(time.Minute).Return(func(_ context.Context, in activities.WaitInput) (activities.AgentResult, error) {
		id, _, _ := strings.Cut(in.Task, "@")
		for name := range fail {
			if strings.HasSuffix(id, "/"+name) {
				return activities.AgentResult{}, activities.ErrAgentFailed.New("the disk is write-protected", nil)
			}
		}
		mu.Lock()
		kind := kinds[id]
		mu.Unlock()
		if kind == agentwire.KindUpdate {
			return activities.AgentResult{Version: version, Written: 2, WrittenBytes: 200, FetchedBytes: 200, Verified: true}, nil
		}
		return activities.AgentResult{Version: version, Written: 5, WrittenBytes: 500, FetchedBytes: 500, Skipped: 5, Verified: true}, nil
	})
	env.OnActivity(r.FinishTask, mock.Anything, mock.Anything).Return(nil)
	return env, prepared
}

func update(t *testing.T, env *testsuite.TestWorkflowEnvironment) (UpdateImageResult, error) {
	t.Helper()
	env.ExecuteWorkflow(UpdateImage, UpdateImageInput{Region: "region-b", Group: "lab", Image: "win11", Concurrency: 2})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res UpdateImageResult
	err := env.GetWorkflowError()
	if err == nil {
		env.GetWorkflowResult(&res)
	}
	return res, err
}

// TestUpdateDecisions runs an update over terminals of every decision: stop boots nothing,
// incremental runs an update task from the decided base, full runs a deploy; each outcome
// carries its decision, reason and bytes, and the totals add up.
func TestUpdateDecisions(t *testing.T) {
	const (
		stop = activities.DecisionStop
		inc  = activities.DecisionIncremental
		full = activities.DecisionFull
	)
	for _, tc := range []struct {
		name      string
		decisions []activities.Decision
		fetched   int64
	}{
		{"all stop", []activities.Decision{stop, stop, stop}, 0},
		{"all incremental", []activities.Decision{inc, inc, inc}, 600},
		{"all full", []activities.Decision{full, full}, 1000},
		{"mixed", []activities.Decision{inc, stop, full, inc}, 900},
		{"one writes", []activities.Decision{stop, full, stop}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, prepared := updateEnv(t, tc.decisions, nil)
			res, err := update(t, env)
			if err != nil {
				t.Fatal(err)
			}
			if res.Version != version || res.Failed != 0 || len(res.Terminals) != len(tc.decisions) || res.FetchedBytes != tc.fetched {
				t.Fatalf("%+v", res)
			}
			count := map[activities.Decision]int{}
			writing := 0
			for _, d := range tc.decisions {
				if d != stop {
					writing++
				}
			}
			for i, o := range res.Terminals {
				d := tc.decisions[i]
				count[d]++
				if !o.OK || o.Decision != d || o.Reason != "because "+string(d) {
					t.Errorf("terminal %d: %+v, want %s", i, o, d)
				}
				in, booted := prepared[o.MAC]
				// Each task says how many terminals write at once: the update's Concurrency
				// (2), at most the terminals it writes.
				if booted && in.Writers != min(2, writing) {
					t.Errorf("%s: prepared with %d writers, want %d", o.Name, in.Writers, min(2, writing))
				}
				switch d {
				case stop:
					if booted || o.FetchedBytes != 0 || o.WrittenBytes != 0 {
						t.Errorf("%s holds the version but was booted (%+v) or wrote (%+v)", o.Name, in, o)
					}
				case inc:
					if in.Kind != "update" || in.Base != baseVersion || in.Version != version || o.FetchedBytes != 200 {
						t.Errorf("%s: prepared %+v, outcome %+v", o.Name, in, o)
					}
				case full:
					if in.Kind != "deploy" || in.Base != "" || in.Version != version || o.FetchedBytes != 500 || o.Skipped != 5 {
						t.Errorf("%s: prepared %+v, outcome %+v", o.Name, in, o)
					}
				}
			}
			if res.Stopped != count[stop] || res.Incremental != count[inc] || res.Full != count[full] {
				t.Errorf("counts %d/%d/%d, want %v", res.Stopped, res.Incremental, res.Full, count)
			}
		})
	}
}

func TestUpdateGoesOnWhenOneTerminalFails(t *testing.T) {
	env, _ := updateEnv(t, []activities.Decision{"incremental", "incremental", "full"}, map[string]bool{"pc2": true})
	res, err := update(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || !res.Terminals[0].OK || res.Terminals[1].OK || !res.Terminals[2].OK {
		t.Fatalf("%+v", res.Terminals)
	}
	if o := res.Terminals[1]; !strings.Contains(o.Error, "write-protected") || o.Decision != "incremental" || o.FetchedBytes != 0 {
		t.Errorf("failure reported as %+v", o)
	}
}

func TestUpdateFailsWhenEveryWrittenTerminalFails(t *testing.T) {
	env, _ := updateEnv(t, []activities.Decision{"stop", "incremental", "full"}, map[string]bool{"pc2": true, "pc3": true})
	_, err := update(t, env)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != "UpdateFailed" || !strings.Contains(ae.Message(), "pc2: the disk is write-protected") {
		t.Fatalf("error %v", err)
	}
	var res UpdateImageResult
	if ae.Details(&res) != nil || res.Failed != 2 || res.Stopped != 1 {
		t.Fatalf("partial result %+v", res)
	}
}

func TestUpdateStopsWhenTheImageCannotBeShared(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(UpdateImage)
	env.RegisterWorkflow(UpdateTerminal)
	env.OnActivity(r.ResolveTerminals, mock.Anything, mock.Anything).Return(activities.ResolveResult{Terminals: []activities.TerminalRef{pc1}}, nil)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(activities.LocateResult{},
		activities.ErrUnknownImage.New("image win11 is not in the catalog", nil))
	_, err := update(t, env)
	if err == nil || !strings.Contains(err.Error(), "not in the catalog") {
		t.Fatalf("error %v", err)
	}
	env.AssertNotCalled(t, "DecideUpdate", mock.Anything, mock.Anything)
	env.AssertNotCalled(t, "PrepareTask", mock.Anything, mock.Anything)
}

func TestUpdateTerminalRefusesAnUnknownDecision(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(UpdateTerminal)
	env.ExecuteWorkflow(UpdateTerminal, UpdateTerminalInput{Region: "region-b", TerminalRef: pc1.MAC, Version: version, Decision: "sideways"})
	err := env.GetWorkflowError()
	if err == nil || !strings.Contains(err.Error(), `"sideways" is not stop, incremental or full`) {
		t.Fatalf("error %v", err)
	}
	env.AssertNotCalled(t, "PrepareTask", mock.Anything, mock.Anything)
}

func TestUpdateWorkflowID(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{UpdateWorkflowID("region-b", "lab", nil, "win11"), "update/region-b/lab/win11"},
		{UpdateWorkflowID("region-b", "", []string{"pc1", "pc2"}, "win11:exam"), "update/region-b/pc1,pc2/win11:exam"},
	} {
		if c.got != c.want {
			t.Errorf("id %q, want %q", c.got, c.want)
		}
	}
}
