package activities

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"tms/agentwire"
	"tms/internal/pgtest"
	"tms/manifest"
	"tms/state"
	"tms/transfer"
)

type fakeAgents struct {
	connected bool
	sent      []string
}

func (f *fakeAgents) Send(mac string, cmd agentwire.Command) {
	f.sent = append(f.sent, mac+" "+string(cmd))
}
func (f *fakeAgents) Connected(mac string) bool { return f.connected }

type fakeWaker struct{ woken []string }

func (f *fakeWaker) Wake(ctx context.Context, mac string) error {
	f.woken = append(f.woken, mac)
	return nil
}

func TestPowerTerminalWakesWhenNoAgentListens(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		connected bool
		command   agentwire.Command
		wake      bool
	}{
		{true, "reboot", false},
		{false, "reboot", true},
		{false, "poweroff", false},
	} {
		ag, wk := &fakeAgents{connected: tc.connected}, &fakeWaker{}
		r := &Region{ID: "r", Agents: ag, Waker: wk}
		if err := r.PowerTerminal(ctx, PowerInput{MAC: "52:54:00:00:00:01", Command: tc.command}); err != nil {
			t.Fatal(err)
		}
		if len(ag.sent) != 1 || (len(wk.woken) == 1) != tc.wake {
			t.Errorf("%+v: sent %v, woken %v", tc, ag.sent, wk.woken)
		}
	}
	if err := (&Region{}).PowerTerminal(ctx, PowerInput{MAC: "x", Command: "reboot"}); err == nil {
		t.Error("a malformed MAC was accepted")
	}
}

// agentSim is a terminal's agent as the region's agent API sees it: when it polled, whether a
// poll is open, the commands it took. onSend decides what the agent does with a command.
type agentSim struct {
	mu       sync.Mutex
	last     time.Time
	polling  bool
	taken    agentwire.Command
	takenAt  time.Time
	onSend   func(a *agentSim, cmd agentwire.Command)
	sent     []agentwire.Command
	wakes    int
	onWake   func(a *agentSim)
	wakeFail error
}

func (a *agentSim) Send(mac string, cmd agentwire.Command) {
	a.mu.Lock()
	a.sent = append(a.sent, cmd)
	f := a.onSend
	a.mu.Unlock()
	if f != nil {
		go f(a, cmd)
	}
}

func (a *agentSim) Connected(mac string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.polling || time.Since(a.last) < time.Minute
}

func (a *agentSim) Polls(mac string) (time.Time, bool, agentwire.Command, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last, a.polling, a.taken, a.takenAt
}

func (a *agentSim) Wake(ctx context.Context, mac string) error {
	a.mu.Lock()
	a.wakes++
	f := a.onWake
	a.mu.Unlock()
	if a.wakeFail != nil {
		return a.wakeFail
	}
	if f != nil {
		f(a)
	}
	return nil
}

// set changes the simulated agent's state under its lock.
func (a *agentSim) set(f func(a *agentSim)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

const (
	powerMAC  = "52:54:00:00:00:21"
	powerName = "pc21"
)

// powerRegion is a region with one enrolled terminal, last seen at ip (never, if ip is empty).
func powerRegion(t *testing.T, ip string) (*Region, *agentSim, *state.Inventory) {
	t.Helper()
	ctx := context.Background()
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "region.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	if err := inv.Enroll(ctx, powerMAC, powerName); err != nil {
		t.Fatal(err)
	}
	if ip != "" {
		if err := inv.Seen(ctx, powerMAC, ip, time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	sim := &agentSim{}
	r := &Region{ID: "r", Inventory: inv, Agents: sim, Mailbox: sim, Waker: sim, Segment: netip.MustParsePrefix("10.0.5.0/24")}
	return r, sim, inv
}

func runPower[I any](t *testing.T, f func(context.Context, I) (PowerOutcome, error), in I) (PowerOutcome, error) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(f)
	v, err := env.ExecuteActivity(f, in)
	var out PowerOutcome
	if err == nil {
		err = v.Get(&out)
	}
	return out, err
}

func TestPowerOn(t *testing.T) {
	quick := PowerOnInput{MAC: powerMAC, Timeout: 300 * time.Millisecond, Every: 20 * time.Millisecond}
	for _, tc := range []struct {
		name    string
		ip      string
		prepare func(r *Region, a *agentSim, inv *state.Inventory)
		outcome string
		reason  string
		wakes   bool
	}{
		{name: "an agent that polled recently is already on", ip: "10.0.5.21",
			prepare: func(r *Region, a *agentSim, _ *state.Inventory) { a.last = time.Now().Add(-3 * time.Second) },
			outcome: PowerAlreadyOn},
		{name: "an agent that took a poweroff is not on", ip: "10.0.5.21",
			prepare: func(r *Region, a *agentSim, _ *state.Inventory) {
				a.last = time.Now().Add(-time.Second)
				a.taken, a.takenAt = agentwire.CommandPoweroff, a.last
				a.onWake = func(a *agentSim) { a.last = time.Now().Add(time.Millisecond) }
			},
			outcome: PowerWoke, wakes: true},
		{name: "a DHCP request after the wake counts as woken", ip: "10.0.5.21",
			prepare: func(r *Region, a *agentSim, inv *state.Inventory) {
				a.onWake = func(a *agentSim) {
					inv.Seen(context.Background(), powerMAC, "10.0.5.21", time.Now().Add(time.Millisecond))
				}
			},
			outcome: PowerWoke, wakes: true},
		{name: "an agent poll after the wake counts as woken", ip: "10.0.5.21",
			prepare: func(r *Region, a *agentSim, _ *state.Inventory) {
				a.onWake = func(a *agentSim) { a.last = time.Now().Add(time.Millisecond) }
			},
			outcome: PowerWoke, wakes: true},
		{name: "a terminal last seen off the boot segment is refused", ip: "192.168.1.7",
			outcome: PowerRefused, reason: "not on the region's boot segment 10.0.5.0/24"},
		{name: "with no segment configured nothing is refused", ip: "192.168.1.7",
			prepare: func(r *Region, a *agentSim, _ *state.Inventory) { r.Segment = netip.Prefix{} },
			outcome: PowerNoAnswer, reason: "last seen", wakes: true},
		{name: "a terminal that does not come says when it was last seen", ip: "10.0.5.21",
			outcome: PowerNoAnswer, reason: "at 10.0.5.21", wakes: true},
		{name: "a terminal never seen is woken anyway and said to be never seen",
			outcome: PowerNoAnswer, reason: "never seen on this segment", wakes: true},
		{name: "a region without a boot service cannot wake", ip: "10.0.5.21",
			prepare: func(r *Region, a *agentSim, _ *state.Inventory) { r.Waker = nil },
			outcome: PowerRefused, reason: "no boot service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, sim, inv := powerRegion(t, tc.ip)
			if tc.prepare != nil {
				sim.set(func(a *agentSim) { tc.prepare(r, a, inv) })
			}
			out, err := runPower(t, r.PowerOn, quick)
			if err != nil {
				t.Fatal(err)
			}
			if out.Outcome != tc.outcome || !strings.Contains(out.Reason, tc.reason) {
				t.Errorf("outcome %+v, want %q with %q", out, tc.outcome, tc.reason)
			}
			if (sim.wakes > 0) != tc.wakes {
				t.Errorf("%d magic packets sent", sim.wakes)
			}
			if tc.outcome == PowerNoAnswer && sim.wakes < 3 {
				t.Errorf("the magic packet was not repeated while waiting: %d sent", sim.wakes)
			}
		})
	}
}

func TestPowerOnBadInput(t *testing.T) {
	r, sim, _ := powerRegion(t, "10.0.5.21")
	sim.wakeFail = errors.New("network is down")
	for _, tc := range []struct {
		name string
		mac  string
		want ErrorType
	}{
		{"a malformed MAC", "nope", ErrBadInput},
		{"a terminal the region does not know", "52:54:00:00:00:99", ErrUnknownTerminal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := runPower(t, r.PowerOn, PowerOnInput{MAC: tc.mac}); !tc.want.Matches(err) {
				t.Errorf("error %v, want %s", err, tc.want)
			}
		})
	}
	if _, err := runPower(t, r.PowerOn, PowerOnInput{MAC: powerMAC, Every: time.Millisecond}); err == nil || !strings.Contains(err.Error(), "network is down") {
		t.Errorf("a failing Wake-on-LAN: %v", err)
	}
}

func TestPowerCommand(t *testing.T) {
	take := func(stopPolling bool) func(a *agentSim, cmd agentwire.Command) {
		return func(a *agentSim, cmd agentwire.Command) {
			time.Sleep(10 * time.Millisecond)
			a.set(func(a *agentSim) {
				a.last, a.taken, a.takenAt = time.Now(), cmd, time.Now()
				a.polling = !stopPolling
			})
		}
	}
	for _, tc := range []struct {
		name    string
		cmd     agentwire.Command
		prepare func(a *agentSim, inv *state.Inventory)
		outcome string
		reason  string
		sent    bool
	}{
		{name: "a reboot the agent takes", cmd: agentwire.CommandReboot,
			prepare: func(a *agentSim, _ *state.Inventory) { a.polling, a.onSend = true, take(false) },
			outcome: PowerRebooted, sent: true},
		{name: "a poweroff the agent takes and stops polling", cmd: agentwire.CommandPoweroff,
			prepare: func(a *agentSim, _ *state.Inventory) { a.polling, a.onSend = true, take(true) },
			outcome: PowerOff, sent: true},
		{name: "a poweroff taken by an agent that keeps polling", cmd: agentwire.CommandPoweroff,
			prepare: func(a *agentSim, _ *state.Inventory) { a.polling, a.onSend = true, take(false) },
			outcome: PowerNoAnswer, reason: "still polls", sent: true},
		{name: "a command the agent never takes", cmd: agentwire.CommandReboot,
			prepare: func(a *agentSim, _ *state.Inventory) { a.last = time.Now() },
			outcome: PowerNoAnswer, reason: "did not take the reboot", sent: true},
		{name: "an agent that stopped polling did not answer", cmd: agentwire.CommandPoweroff,
			prepare: func(a *agentSim, _ *state.Inventory) { a.last = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC) },
			outcome: PowerNoAnswer, reason: "no agent has polled since 2026-12-01T08:00:00Z"},
		{name: "an agent that never polled did not answer", cmd: agentwire.CommandReboot,
			outcome: PowerNoAnswer, reason: "no agent has polled this region"},
		{name: "a terminal with a task running is refused, naming it", cmd: agentwire.CommandReboot,
			prepare: func(a *agentSim, inv *state.Inventory) {
				a.polling = true
				// As PrepareTask leaves it: the task recorded and the terminal's boot set to it.
				inv.StartTask(context.Background(), state.Task{ID: "deploy/r/lab/x@run", MAC: powerMAC, Kind: agentwire.KindDeploy, Version: "v"}, time.Now())
				inv.SetBootAction(context.Background(), powerMAC, state.BootAction{Action: agentwire.ActionDeploy, Task: "deploy/r/lab/x@run", Version: "v",
					Expires: time.Now().Add(time.Hour)})
			},
			outcome: PowerRefused, reason: "task deploy/r/lab/x@run (deploy) is running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, sim, inv := powerRegion(t, "10.0.5.21")
			if tc.prepare != nil {
				sim.set(func(a *agentSim) { tc.prepare(a, inv) })
			}
			out, err := runPower(t, r.PowerCommand, PowerCommandInput{MAC: powerMAC, Command: tc.cmd, Timeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if out.Outcome != tc.outcome || !strings.Contains(out.Reason, tc.reason) {
				t.Errorf("outcome %+v, want %q with %q", out, tc.outcome, tc.reason)
			}
			if (len(sim.sent) > 0) != tc.sent {
				t.Errorf("sent %v", sim.sent)
			}
		})
	}
	r, _, _ := powerRegion(t, "")
	if _, err := runPower(t, r.PowerCommand, PowerCommandInput{MAC: powerMAC, Command: "explode"}); !ErrBadInput.Matches(err) {
		t.Errorf("an unknown command: %v", err)
	}
}

type fakeSiblings struct {
	delivered bool
	asked     []string
}

func (f *fakeSiblings) First(src transfer.Source, _ manifest.ID) transfer.Source { return src }

func (f *fakeSiblings) Command(_ context.Context, mac string, cmd agentwire.Command) (bool, error) {
	f.asked = append(f.asked, mac+" "+string(cmd))
	return f.delivered, nil
}

// TestPowerTerminalAsksTheSiblings: a command for an agent that polls another of the region's
// servers goes through the siblings, and then no copy waits here (it would reboot the terminal
// a second time) and nothing is woken; an agent polling here is not asked of the siblings.
func TestPowerTerminalAsksTheSiblings(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name               string
		connected, polled  bool
		asked, sent, woken int
	}{
		{"polls here", true, false, 0, 1, 0},
		{"polls a sibling", false, true, 1, 0, 0},
		{"polls nobody", false, false, 1, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ag, wk, sb := &fakeAgents{connected: tc.connected}, &fakeWaker{}, &fakeSiblings{delivered: tc.polled}
			r := &Region{ID: "r", Agents: ag, Waker: wk, Siblings: sb}
			if err := r.PowerTerminal(ctx, PowerInput{MAC: "52:54:00:00:00:01", Command: agentwire.CommandReboot}); err != nil {
				t.Fatal(err)
			}
			if len(sb.asked) != tc.asked || len(ag.sent) != tc.sent || len(wk.woken) != tc.woken {
				t.Errorf("siblings asked %v, sent here %v, woken %v", sb.asked, ag.sent, wk.woken)
			}
		})
	}
}
