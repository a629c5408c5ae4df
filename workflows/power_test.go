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

var labTerminals = []activities.TerminalRef{
	{MAC: "52:54:00:00:00:01", Name: "pc1"},
	{MAC: "52:54:00:00:00:02", Name: "pc2"},
	{MAC: "52:54:00:00:00:03", Name: "pc3"},
}

func newPowerEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	env := newEnv(t)
	env.RegisterWorkflow(PowerTerminals)
	env.OnActivity(r.ResolveTerminals, mock.Anything, activities.ResolveInput{Group: "lab"}).
		Return(activities.ResolveResult{Terminals: labTerminals}, nil).Maybe()
	return env
}

func power(t *testing.T, env *testsuite.TestWorkflowEnvironment, in PowerTerminalsInput) (PowerTerminalsResult, error) {
	t.Helper()
	env.ExecuteWorkflow(PowerTerminals, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	var res PowerTerminalsResult
	err := env.GetWorkflowError()
	if err == nil {
		env.GetWorkflowResult(&res)
	}
	return res, err
}

// outcomes returns the terminals' outcomes as "name=outcome" words, in order.
func outcomes(res PowerTerminalsResult) string {
	var s []string
	for _, o := range res.Terminals {
		s = append(s, o.Name+"="+o.Outcome)
	}
	return strings.Join(s, " ")
}

func TestPowerTerminalsOutcomes(t *testing.T) {
	byMAC := func(outs map[string]activities.PowerOutcome) func(mac string) activities.PowerOutcome {
		return func(mac string) activities.PowerOutcome { return outs[mac] }
	}
	for _, tc := range []struct {
		name   string
		action string
		outs   map[string]activities.PowerOutcome
		fail   map[string]error
		want   string
		failed int
	}{
		{name: "power on wakes the ones that are off and leaves the ones that are on", action: PowerActionOn,
			outs: map[string]activities.PowerOutcome{"52:54:00:00:00:01": {Outcome: activities.PowerWoke},
				"52:54:00:00:00:02": {Outcome: activities.PowerAlreadyOn}, "52:54:00:00:00:03": {Outcome: activities.PowerWoke}},
			want: "pc1=woke pc2=already on pc3=woke"},
		{name: "power off of a terminal that does not answer fails only that one", action: PowerActionOff,
			outs: map[string]activities.PowerOutcome{"52:54:00:00:00:01": {Outcome: activities.PowerOff},
				"52:54:00:00:00:02": {Outcome: activities.PowerNoAnswer, Reason: "no agent has polled since 2026-12-02T08:00:00Z"},
				"52:54:00:00:00:03": {Outcome: activities.PowerOff}},
			want: "pc1=off pc2=did not answer pc3=off", failed: 1},
		{name: "reboot refused for a terminal with a task and failed for one whose activity failed", action: PowerActionReboot,
			outs: map[string]activities.PowerOutcome{"52:54:00:00:00:01": {Outcome: activities.PowerRebooted},
				"52:54:00:00:00:02": {Outcome: activities.PowerRefused, Reason: "task deploy/x is running on it"}},
			fail: map[string]error{"52:54:00:00:00:03": activities.ErrUnknownTerminal.New("terminal pc3 is no longer in region region-b", nil)},
			want: "pc1=rebooted pc2=refused pc3=failed", failed: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newPowerEnv(t)
			outcome := byMAC(tc.outs)
			errOf := func(mac string) error { return tc.fail[mac] }
			if tc.action == PowerActionOn {
				env.OnActivity(r.PowerOn, mock.Anything, mock.Anything).Return(
					func(_ context.Context, in activities.PowerOnInput) (activities.PowerOutcome, error) {
						return outcome(in.MAC), errOf(in.MAC)
					})
			} else {
				cmd := agentwire.CommandPoweroff
				if tc.action == PowerActionReboot {
					cmd = agentwire.CommandReboot
				}
				env.OnActivity(r.PowerCommand, mock.Anything, mock.MatchedBy(func(in activities.PowerCommandInput) bool { return in.Command == cmd })).Return(
					func(_ context.Context, in activities.PowerCommandInput) (activities.PowerOutcome, error) {
						return outcome(in.MAC), errOf(in.MAC)
					})
			}
			res, err := power(t, env, PowerTerminalsInput{Region: "region-b", Action: tc.action, Group: "lab"})
			if err != nil {
				t.Fatal(err)
			}
			if got := outcomes(res); got != tc.want || res.Failed != tc.failed || res.Action != tc.action {
				t.Fatalf("outcomes %q (%d failed), want %q (%d failed)", got, res.Failed, tc.want, tc.failed)
			}
			for i, o := range res.Terminals {
				if want, ok := tc.outs[labTerminals[i].MAC]; ok && o.Reason != want.Reason {
					t.Errorf("%s: reason %q, want %q", o.Name, o.Reason, want.Reason)
				}
				if o.OK != activities.PowerOK(o.Outcome) || o.MAC != labTerminals[i].MAC {
					t.Errorf("%+v", o)
				}
			}
			if tc.fail != nil && !strings.Contains(res.Terminals[2].Reason, "no longer in region") {
				t.Errorf("a failed activity's reason: %q", res.Terminals[2].Reason)
			}
		})
	}
}

func TestPowerTerminalsRunsTheTerminalsAtOnce(t *testing.T) {
	env := newPowerEnv(t)
	var mu sync.Mutex // the test environment runs activities on goroutines of their own
	running, most := 0, 0
	env.OnActivity(r.PowerOn, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.PowerOnInput) (activities.PowerOutcome, error) {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			return activities.PowerOutcome{Outcome: activities.PowerWoke}, nil
		})
	if _, err := power(t, env, PowerTerminalsInput{Region: "region-b", Action: PowerActionOn, Group: "lab"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if most < 2 {
		t.Errorf("at most %d terminal at once", most)
	}
}

func TestPowerTerminalsFailsWhenEveryTerminalFailed(t *testing.T) {
	env := newPowerEnv(t)
	env.OnActivity(r.PowerCommand, mock.Anything, mock.Anything).Return(
		activities.PowerOutcome{Outcome: activities.PowerNoAnswer, Reason: "no agent has polled this region for commands since it started"}, nil)
	_, err := power(t, env, PowerTerminalsInput{Region: "region-b", Action: PowerActionOff, Group: "lab"})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != string(activities.ErrPowerFailed) ||
		!strings.Contains(ae.Message(), "pc1: did not answer: no agent has polled") {
		t.Fatalf("error %v", err)
	}
	var res PowerTerminalsResult
	if ae.Details(&res) != nil || len(res.Terminals) != 3 || res.Failed != 3 {
		t.Errorf("the failure does not carry the outcomes: %+v", res)
	}
}

func TestPowerTerminalsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   PowerTerminalsInput
		err  error
		want string
	}{
		{"an unknown action", PowerTerminalsInput{Region: "region-b", Action: "hibernate", Group: "lab"}, nil, `"hibernate" is not on, off or reboot`},
		{"an unknown group", PowerTerminalsInput{Region: "region-b", Action: PowerActionOn, Group: "nope"},
			activities.ErrUnknownGroup.New("region region-b has no group nope", nil), "has no group nope"},
		{"an unknown terminal", PowerTerminalsInput{Region: "region-b", Action: PowerActionOff, Terminals: []string{"pc9"}},
			activities.ErrUnknownTerminal.New("region region-b has no terminal pc9", nil), "has no terminal pc9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newPowerEnv(t)
			env.OnActivity(r.ResolveTerminals, mock.Anything, mock.Anything).Return(activities.ResolveResult{}, tc.err).Maybe()
			_, err := power(t, env, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			env.AssertNotCalled(t, "PowerOn", mock.Anything, mock.Anything)
			env.AssertNotCalled(t, "PowerCommand", mock.Anything, mock.Anything)
		})
	}
}

func TestPowerTerminalsProgress(t *testing.T) {
	env := newPowerEnv(t)
	env.OnActivity(r.PowerOn, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.PowerOnInput) (activities.PowerOutcome, error) {
			if in.MAC == "52:54:00:00:00:03" {
				return activities.PowerOutcome{Outcome: activities.PowerNoAnswer, Reason: "never seen on this segment"}, nil
			}
			return activities.PowerOutcome{Outcome: activities.PowerWoke}, nil
		})
	if _, err := power(t, env, PowerTerminalsInput{Region: "region-b", Action: PowerActionOn, Group: "lab"}); err != nil {
		t.Fatal(err)
	}
	v, err := env.QueryWorkflow(QueryProgress)
	if err != nil {
		t.Fatal(err)
	}
	var end PowerProgress
	v.Get(&end)
	if end.Phase != PhaseDone || end.Action != PowerActionOn || len(end.Terminals) != 3 || end.Terminals[0].Outcome != activities.PowerWoke ||
		end.Terminals[2].Outcome != activities.PowerNoAnswer || end.Terminals[2].Reason != "never seen on this segment" {
		t.Errorf("final progress %+v", end)
	}
}

func TestPowerWorkflowIDs(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{PowerWorkflowID(PowerActionOn, "region-b", "lab", nil), "power-on/region-b/lab"},
		{PowerWorkflowID(PowerActionOff, "region-b", "", []string{"pc1", "pc2"}), "power-off/region-b/pc1,pc2"},
		{PowerWorkflowID(PowerActionReboot, "region-b", "lab", nil), "reboot/region-b/lab"},
	} {
		if c.got != c.want {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
}
