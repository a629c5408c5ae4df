package activities

import (
	"context"
	"testing"
	"tms/agentwire"
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
