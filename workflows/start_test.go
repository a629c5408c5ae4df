package workflows

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
)

// modify sends a "modify" Update and returns its outcome: the validator's refusal, or the
// handler's result.
func modify(env *testsuite.TestWorkflowEnvironment, m ModifyInput, got *ModifyResult, gotErr *error) {
	env.UpdateWorkflow(UpdateModify, "modify-1", &testsuite.TestUpdateCallback{
		OnAccept: func() {},
		OnReject: func(err error) { *gotErr = err },
		OnComplete: func(v any, err error) {
			if err != nil {
				*gotErr = err
				return
			}
			if r, ok := v.(ModifyResult); ok {
				*got = r
			}
		},
	}, m)
}

func TestShareWaitsForItsStartTime(t *testing.T) {
	env := newEnv(t)
	start := env.Now().Add(2 * time.Hour)
	var located time.Time
	env.OnActivity(c.LocateVersion, mock.Anything, activities.LocateInput{Image: "win11:exam", Target: "region-b"}).
		Return(func(_ context.Context, _ activities.LocateInput) (activities.LocateResult, error) {
			located = env.Now()
			return activities.LocateResult{Version: version, TargetHas: true}, nil
		}).Once()
	env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b", StartAt: start})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if located.Before(start) {
		t.Fatalf("share started at %v, before its start time %v", located, start)
	}
}

func TestModifyBeforeStartChangesTimeAndImage(t *testing.T) {
	env := newEnv(t)
	start := env.Now().Add(2 * time.Hour)
	later := env.Now().Add(5 * time.Hour)
	var located time.Time
	env.OnActivity(c.LocateVersion, mock.Anything, activities.LocateInput{Image: "win11:v2", Target: "region-b"}).
		Return(func(_ context.Context, _ activities.LocateInput) (activities.LocateResult, error) {
			located = env.Now()
			return activities.LocateResult{Version: version, TargetHas: true}, nil
		}).Once()
	var res ModifyResult
	var err error
	env.RegisterDelayedCallback(func() {
		modify(env, ModifyInput{StartAt: later, Image: "win11:v2"}, &res, &err)
	}, 10*time.Minute)
	env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b", StartAt: start})
	if werr := env.GetWorkflowError(); werr != nil || err != nil {
		t.Fatalf("workflow: %v; modify: %v", werr, err)
	}
	if !res.StartAt.Equal(later) || res.Image != "win11:v2" {
		t.Fatalf("modify result: %+v", res)
	}
	if located.Before(later) {
		t.Fatalf("share started at %v, before its new start time %v", located, later)
	}
	env.AssertExpectations(t)
}

func TestModifyChangesADeploysTargets(t *testing.T) {
	for _, tc := range []struct {
		name string
		from DeployImageInput
		m    ModifyInput
		want activities.ResolveInput
	}{
		{"group to terminals", DeployImageInput{Group: "room1"}, ModifyInput{Terminals: []string{"pc1", "pc2"}}, activities.ResolveInput{Terminals: []string{"pc1", "pc2"}}},
		{"terminals to group", DeployImageInput{Terminals: []string{"pc1"}}, ModifyInput{Group: "room2"}, activities.ResolveInput{Group: "room2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTerminalEnv(t)
			in := tc.from
			in.Region, in.Image, in.StartAt = "region-a", "win11", env.Now().Add(time.Hour)
			env.OnActivity(r.ResolveTerminals, mock.Anything, tc.want).
				Return(activities.ResolveResult{}, activities.ErrEmptyGroup.New("stop here", nil)).Once()
			var res ModifyResult
			var err error
			env.RegisterDelayedCallback(func() { modify(env, tc.m, &res, &err) }, time.Minute)
			env.ExecuteWorkflow(DeployImage, in)
			if err != nil {
				t.Fatalf("modify: %v", err)
			}
			if werr := env.GetWorkflowError(); werr == nil || !strings.Contains(werr.Error(), "stop here") {
				t.Fatalf("workflow: %v", werr)
			}
			if res.Group != tc.want.Group || !slices.Equal(res.Terminals, tc.want.Terminals) {
				t.Fatalf("modify result: %+v", res)
			}
			env.AssertExpectations(t)
		})
	}
}

func TestModifyRefusesBadChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    ModifyInput
		want string
	}{
		{"nothing", ModifyInput{}, "nothing to change"},
		{"a time in the past", ModifyInput{StartAt: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}, "is in the past"},
		{"a share's targets", ModifyInput{Group: "room1"}, "targets cannot be changed"},
		{"a bad image", ModifyInput{Image: "win 11"}, "image reference"},
		{"a bad tag", ModifyInput{Image: "win11:'; drop"}, "image reference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			env.OnActivity(c.LocateVersion, mock.Anything, activities.LocateInput{Image: "win11:exam", Target: "region-b"}).
				Return(activities.LocateResult{Version: version, TargetHas: true}, nil).Once()
			var res ModifyResult
			var err error
			env.RegisterDelayedCallback(func() { modify(env, tc.m, &res, &err) }, time.Minute)
			env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b", StartAt: env.Now().Add(time.Hour)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("modify %+v: %v, want %q", tc.m, err, tc.want)
			}
			if werr := env.GetWorkflowError(); werr != nil {
				t.Fatalf("a refused modify harmed the task: %v", werr)
			}
		})
	}
}

func TestModifyRefusesACaptureTarget(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(activities.TerminalRef{},
		activities.ErrUnknownTerminal.New("stop here", nil)).Once()
	var res ModifyResult
	var err error
	env.RegisterDelayedCallback(func() { modify(env, ModifyInput{Terminals: []string{"pc2"}}, &res, &err) }, time.Minute)
	env.ExecuteWorkflow(CaptureImage, CaptureImageInput{Region: "region-a", TerminalRef: "pc1", Image: "win11", StartAt: env.Now().Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "targets cannot be changed") {
		t.Fatalf("modify of a capture's terminal: %v", err)
	}
}

func TestModifyRefusedOnceStarted(t *testing.T) {
	for name, start := range map[string]func(time.Time) time.Time{
		"asked for now":   func(time.Time) time.Time { return time.Time{} },
		"its time passed": func(now time.Time) time.Time { return now.Add(time.Minute) },
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t)
			env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).After(time.Hour).
				Return(activities.LocateResult{Version: version, TargetHas: true}, nil).Once()
			var res ModifyResult
			var err error
			env.RegisterDelayedCallback(func() { modify(env, ModifyInput{Image: "win11:v2"}, &res, &err) }, 10*time.Minute)
			env.ExecuteWorkflow(ShareImage, ShareImageInput{Image: "win11:exam", Target: "region-b", StartAt: start(env.Now())})
			if !IsStarted(err) || !strings.Contains(err.Error(), "it can no longer be changed: cancel it and start another") {
				t.Fatalf("modify after the start: %v", err)
			}
			if werr := env.GetWorkflowError(); werr != nil {
				t.Fatal(werr)
			}
		})
	}
}

func TestCancelWhileWaitingTouchesNothing(t *testing.T) {
	env := newTerminalEnv(t)
	env.RegisterDelayedCallback(env.CancelWorkflow, 10*time.Minute)
	env.ExecuteWorkflow(DeployImage, DeployImageInput{Region: "region-a", Group: "room1", Image: "win11", StartAt: env.Now().Add(time.Hour)})
	err := env.GetWorkflowError()
	var ce *temporal.CanceledError
	if !errors.As(err, &ce) {
		t.Fatalf("canceled while waiting: %v", err)
	}
	env.AssertNotCalled(t, "ResolveTerminals", mock.Anything, mock.Anything)
	env.AssertNotCalled(t, "PrepareTask", mock.Anything, mock.Anything)
}

func TestCancelDuringDeployLetsTerminalsFinish(t *testing.T) {
	env := newTerminalEnv(t)
	env.OnActivity(r.ResolveTerminals, mock.Anything, mock.Anything).Return(activities.ResolveResult{Terminals: []activities.TerminalRef{pc1}}, nil)
	env.OnActivity(c.LocateVersion, mock.Anything, mock.Anything).Return(activities.LocateResult{Version: version, TargetHas: true}, nil)
	env.OnActivity(r.PrepareTask, mock.Anything, mock.Anything).Return(pc1, nil)
	env.OnActivity(r.PowerTerminal, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(r.WaitForAgent, mock.Anything, mock.Anything).After(time.Hour).Return(activities.AgentResult{}, nil)
	env.OnActivity(r.FinishTask, mock.Anything, finished("canceled")).Return(nil).Once()
	env.RegisterDelayedCallback(env.CancelWorkflow, 10*time.Minute)
	env.ExecuteWorkflow(DeployImage, DeployImageInput{Region: "region-a", Group: "room1", Image: "win11"})
	var ce *temporal.CanceledError
	if err := env.GetWorkflowError(); !errors.As(err, &ce) {
		t.Fatalf("canceled deploy: %v", err)
	}
	// The terminal's task was canceled, not cut off: it set pc1 back to its own disk.
	env.AssertExpectations(t)
}

// FuzzModifyCheck feeds the "modify" validator what any Temporal client may send: it never
// panics, and what it accepts is a name, MAC or image reference tms can use.
func FuzzModifyCheck(f *testing.F) {
	f.Add("room1", "pc1", "win11:exam", int64(3600))
	f.Add("", "52:54:00:00:00:01", "", int64(-1))
	f.Add("a'b", "pc 1", "win@", int64(0))
	now := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, group, terminal, image string, after int64) {
		var at time.Time
		if after != 0 {
			at = now.Add(time.Duration(after) * time.Second)
		}
		var terminals []string
		if terminal != "" {
			terminals = strings.Split(terminal, ",")
		}
		in := DeployImageInput{Group: "room0", Image: "win10", StartAt: now.Add(time.Hour)}
		fields := startFields{At: &in.StartAt, Group: &in.Group, Terminals: &in.Terminals, Image: &in.Image}
		m := ModifyInput{StartAt: at, Group: group, Terminals: terminals, Image: image}
		if err := fields.check(m, now); err != nil {
			return
		}
		fields.apply(m)
		if strings.ContainsAny(in.Group+in.Image+strings.Join(in.Terminals, ""), "'\"\\ \n") {
			t.Fatalf("accepted %+v", in)
		}
		if !in.StartAt.After(now) || (in.Group == "") == (len(in.Terminals) == 0) {
			t.Fatalf("accepted a plan without a future start or with both or neither target: %+v", in)
		}
	})
}
