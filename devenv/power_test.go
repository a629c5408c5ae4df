package devenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devenv"
	"tms/workflows"
)

// power runs a PowerTerminals task in env and returns its per-terminal outcomes as
// "name=outcome" words; err is the task's failure.
func power(t *testing.T, env *devenv.Env, in workflows.PowerTerminalsInput) (workflows.PowerTerminalsResult, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	in.Region = "region-b"
	run, err := env.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        workflows.Stamped(workflows.PowerWorkflowID(in.Action, in.Region, in.Group, in.Terminals), time.Now()),
		TaskQueue: activities.RegionQueue(in.Region)}, workflows.PowerTerminals, in)
	if err != nil {
		t.Fatal(err)
	}
	var res workflows.PowerTerminalsResult
	err = run.Get(ctx, &res)
	var words []string
	for _, o := range res.Terminals {
		words = append(words, o.Name+"="+o.Outcome)
	}
	return res, strings.Join(words, " "), err
}

func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !check(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPowerOffAndOn powers region-b's lab off and on again in tms dev: the terminals' agent
// services take the poweroff and stop, and the magic packets the region sends to the lab's
// loopback wake port switch them on again: they boot and their services poll again.
func TestPowerOffAndOn(t *testing.T) {
	env := start(t, t.TempDir(), "region-b")
	defer env.Stop()
	api := env.Regions["region-b"].Agents
	names := []string{"b-pc1", "b-pc2", "b-pc3"}
	polling := func(name string) bool {
		tm, _ := env.Terminal(name)
		return api.Connected(tm.MAC)
	}
	eventually(t, "the lab's agent services", func() bool { return polling("b-pc1") && polling("b-pc2") && polling("b-pc3") })

	_, got, err := power(t, env, workflows.PowerTerminalsInput{Action: workflows.PowerActionOff, Group: "lab"})
	if err != nil || got != "b-pc1=off b-pc2=off b-pc3=off" {
		t.Fatalf("power off: %s, %v", got, err)
	}
	for _, n := range names {
		if env.On(n) {
			t.Errorf("%s is still on", n)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, n := range names {
		tm, _ := env.Terminal(n)
		if _, polls, _, _ := api.Polls(tm.MAC); polls {
			t.Errorf("%s still polls", n)
		}
	}

	// b-pc2 was last seen on another segment: it is refused; the others wake.
	pc2, _ := env.Terminal("b-pc2")
	if err := env.Regions["region-b"].Inventory.Seen(context.Background(), pc2.MAC, "10.9.9.9", time.Now()); err != nil {
		t.Fatal(err)
	}
	res, got, err := power(t, env, workflows.PowerTerminalsInput{Action: workflows.PowerActionOn, Group: "lab", Timeout: 30 * time.Second})
	if err != nil || got != "b-pc1=woke b-pc2=refused b-pc3=woke" {
		t.Fatalf("power on: %s, %v", got, err)
	}
	if !strings.Contains(res.Terminals[1].Reason, "last seen at 10.9.9.9, which is not on the region's boot segment 127.0.0.0/8") {
		t.Errorf("b-pc2's refusal: %q", res.Terminals[1].Reason)
	}
	if !env.On("b-pc1") || !env.On("b-pc3") || env.On("b-pc2") {
		t.Fatalf("after power on: b-pc1 %v, b-pc2 %v, b-pc3 %v", env.On("b-pc1"), env.On("b-pc2"), env.On("b-pc3"))
	}
	eventually(t, "the woken terminals' services to poll", func() bool { return polling("b-pc1") && polling("b-pc3") })

	// Once it shows up on the segment again (its DHCP), it can be woken.
	if err := env.Regions["region-b"].Inventory.Seen(context.Background(), pc2.MAC, "127.0.0.1", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, got, err = power(t, env, workflows.PowerTerminalsInput{Action: workflows.PowerActionOn, Group: "lab"}); err != nil ||
		got != "b-pc1=already on b-pc2=woke b-pc3=already on" {
		t.Fatalf("power on again: %s, %v", got, err)
	}

	// Reboot: the service takes it, the terminal boots from the network and its service polls
	// again.
	if _, got, err = power(t, env, workflows.PowerTerminalsInput{Action: workflows.PowerActionReboot, Terminals: []string{"b-pc1"}}); err != nil ||
		got != "b-pc1=rebooted" {
		t.Fatalf("reboot: %s, %v", got, err)
	}
	tm, _ := env.Terminal("b-pc1")
	rebooted := time.Now()
	eventually(t, "b-pc1 back after its reboot", func() bool {
		last, polls, _, _ := api.Polls(tm.MAC)
		return polls && last.After(rebooted)
	})

	// A terminal that lost power does not answer, and the others are not held up by it.
	env.StopAgent("b-pc3")
	res, got, err = power(t, env, workflows.PowerTerminalsInput{Action: workflows.PowerActionOff, Group: "lab", Timeout: 5 * time.Second})
	if err != nil || got != "b-pc1=off b-pc2=off b-pc3=did not answer" {
		t.Fatalf("power off with b-pc3 unplugged: %s, %v", got, err)
	}
	if !strings.Contains(res.Terminals[2].Reason, "did not take the poweroff") && !strings.Contains(res.Terminals[2].Reason, "no agent has polled since") {
		t.Errorf("b-pc3's reason: %q", res.Terminals[2].Reason)
	}
}
