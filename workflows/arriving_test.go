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
	"tms/state"
)

// mockArrivingShare has pc1 resolved and win11 shared to the region while it arrives: its peer
// pull notes pulled and ends an hour in with pullErr, the relay fails.
func mockArrivingShare(env *testsuite.TestWorkflowEnvironment, note func(string), pulled string, pullErr error) {
	env.OnActivity(r.ResolveTerminals, mock.Anything, mock.Anything).Return(activities.ResolveResult{Terminals: []activities.TerminalRef{pc1}}, nil)
	env.OnActivity(c.LocateVersion, mock.Anything, locateWin11).Return(located("region-a"), nil)
	env.OnActivity(r.AwaitVersion, mock.Anything, activities.AwaitVersionInput{Version: version}).Return(activities.AwaitVersionResult{Arriving: true}, nil)
	env.OnActivity(c.MintGrant, mock.Anything, mock.Anything).Return(activities.GrantResult{Token: "g"}, nil)
	env.OnActivity(r.PullFromPeer, mock.Anything, mock.Anything).After(time.Hour).Return(func(context.Context, activities.PullInput) (activities.MoveResult, error) {
		note(pulled)
		if pullErr != nil {
			return activities.MoveResult{}, pullErr
		}
		return activities.MoveResult{MovedBytes: 9}, nil
	})
	env.OnActivity(r.PushToRelay, mock.Anything, mock.Anything).Return(activities.MoveResult{}, errors.New("relay unreachable"))
	env.OnActivity(r.PullFromRelay, mock.Anything, mock.Anything).Return(activities.MoveResult{}, errors.New("relay unreachable"))
}

// arrivingDeploy runs a deploy of win11 to pc1 while the region's share of it runs: its peer
// pull takes an hour and ends with pullErr, the relay fails, the agent takes agent. It returns
// the deploy's outcome and what happened, in order.
func arrivingDeploy(t *testing.T, pullErr error, agent time.Duration) (DeployImageResult, string, error) {
	env := newTerminalEnv(t)
	var mu sync.Mutex
	var events []string
	note := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	mockArrivingShare(env, note, "pulled", pullErr)
	env.OnActivity(c.RecordLocation, mock.Anything, mock.Anything).Return(func(context.Context, activities.RecordInput) error {
		note("recorded")
		return nil
	})
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.TaskInput) (activities.TerminalRef, error) {
		if in.Version != version {
			t.Errorf("prepare %+v", in)
		}
		note("prepared")
		return pc1, nil
	})
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).After(agent).Return(func(context.Context, activities.WaitInput) (activities.AgentResult, error) {
		note("written")
		return activities.AgentResult{Written: 3, Verified: true}, nil
	})
	env.OnActivity(r.FinishTask, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.FinishInput) error {
		note("finished " + string(in.State))
		return nil
	})
	res, err := deploy(t, env, DeployImageInput{Region: "region-b", Group: "lab", Image: "win11"})
	mu.Lock()
	defer mu.Unlock()
	return res, strings.Join(events, ", "), err
}

func TestDeployStartsItsTerminalsWhileTheImageArrives(t *testing.T) {
	res, got, err := arrivingDeploy(t, nil, 50*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The terminal was prepared and wrote while the share still pulled; the deploy waited for
	// the share's end before it ended.
	if want := "prepared, written, finished done, pulled, recorded"; got != want {
		t.Fatalf("events: %s; want %s", got, want)
	}
	if res.Version != version || res.Share.Path != PathPeer || res.Failed != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestDeployFailsWithTheShareWhenItFailsMidWay(t *testing.T) {
	corrupt := activities.ErrSourceCorrupt.New("chunk 1a2b from region-a: source sent corrupt data", nil)
	_, got, err := arrivingDeploy(t, corrupt, 2*time.Hour)
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != string(activities.ErrShareFailed) || !strings.Contains(ae.Message(), "corrupt data") {
		t.Fatalf("error %v; want the share's failure with its reason", err)
	}
	// The terminal's task was canceled (its boot action put back) before the deploy ended.
	if want := "prepared, pulled, finished " + string(state.TaskCanceled); got != want {
		t.Fatalf("events: %s; want %s", got, want)
	}
}

// TestUpdateFailsWithTheShareWhenItFailsMidWay: an update decides and starts writing while
// its version arrives; the share fails an hour in, the terminal's task is canceled and the
// update fails with the share's reason.
func TestUpdateFailsWithTheShareWhenItFailsMidWay(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(UpdateImage)
	env.RegisterWorkflow(UpdateTerminal)
	var mu sync.Mutex
	var events []string
	note := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	mockArrivingShare(env, note, "pull failed", activities.ErrSourceCorrupt.New("chunk 1a2b from region-a: source sent corrupt data", nil))
	env.OnActivity(r.DecideUpdate, mock.Anything, mock.Anything).Return(func(context.Context, activities.DecideInput) (activities.DecideResult, error) {
		note("decided")
		return activities.DecideResult{Terminals: []activities.TerminalDecision{{MAC: pc1.MAC, Decision: activities.DecisionFull, Reason: "no version recorded"}}}, nil
	})
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(pc1, nil)
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).After(2*time.Hour).Return(activities.AgentResult{Verified: true}, nil)
	env.OnActivity(r.FinishTask, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.FinishInput) error {
		note("finished " + string(in.State))
		return nil
	})
	env.ExecuteWorkflow(UpdateImage, UpdateImageInput{Region: "region-b", Group: "lab", Image: "win11"})
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var ae *temporal.ApplicationError
	if err := env.GetWorkflowError(); !errors.As(err, &ae) || ae.Type() != string(activities.ErrShareFailed) || !strings.Contains(ae.Message(), "corrupt data") {
		t.Fatalf("error %v; want the share's failure with its reason", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(events, ", "), "decided, pull failed, finished "+string(state.TaskCanceled); got != want {
		t.Fatalf("events: %s; want %s", got, want)
	}
}
