package activities

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"go.temporal.io/sdk/activity"

	"tms/agentwire"
	"tms/state"
	"tms/store"
)

// Power outcomes, one per terminal of a `tms power` task. The words travel in histories and
// --json output: they do not change.
const (
	PowerWoke      = "woke"           // it was off; Wake-on-LAN brought it up
	PowerAlreadyOn = "already on"     // its agent polled recently
	PowerOff       = "off"            // its agent took the poweroff and stopped polling
	PowerRebooted  = "rebooted"       // its agent took the reboot
	PowerNoAnswer  = "did not answer" // Reason says what was tried and what was last heard
	PowerRefused   = "refused"        // Reason says why it was not tried
)

// PowerOK reports whether a power outcome is what was asked for.
func PowerOK(outcome string) bool {
	switch outcome {
	case PowerWoke, PowerAlreadyOn, PowerOff, PowerRebooted:
		return true
	}
	return false
}

// Mailbox is what the region's agent API knows of a terminal's agent (agentapi.Server.Polls):
// when it last polled for commands, whether a poll is open now, and the last command a poll
// took, and when.
type Mailbox interface {
	Polls(mac string) (last time.Time, polling bool, taken agentwire.Command, takenAt time.Time)
}

// Defaults of the power activities.
const (
	// DefaultWakeTimeout is how long a power-on waits for a woken terminal to be seen.
	DefaultWakeTimeout = 3 * time.Minute
	// DefaultWakeEvery is how often the magic packet is sent again while waiting.
	DefaultWakeEvery = 5 * time.Second
	// UpWindow is how recent an agent's poll must be for its terminal to count as on, when no
	// poll is open: a live agent polls again at once, so a gap longer than this is a terminal
	// that went down (or an agent backing off from an unreachable region).
	UpWindow = 10 * time.Second
	// DefaultAnswerTimeout is how long a poweroff or reboot waits for the agent to take it,
	// and a poweroff then for the agent to stop polling.
	DefaultAnswerTimeout = 2 * time.Minute
)

// PowerOnInput asks for one terminal to be switched on.
type PowerOnInput struct {
	MAC string
	// Timeout bounds the wait for the terminal to be seen (0: the region's wake timeout).
	Timeout time.Duration
	// Every is how often the magic packet is sent again (0: DefaultWakeEvery).
	Every time.Duration
}

// PowerOutcome is how one terminal's power command ended.
type PowerOutcome struct {
	Outcome string // one of the Power* words
	Reason  string `json:",omitempty"`
}

// PowerOn switches a terminal on: one whose agent polls, or polled within UpWindow, and did not
// take a poweroff since, is already on; any other is sent Wake-on-LAN from the region's boot
// interface, again every few seconds, until it is seen (a DHCP request, an iPXE script or an
// agent poll after the wake began) or the timeout passes. A terminal last seen at an address
// outside the region's boot segment is refused: a magic packet does not cross a router.
func (r *Region) PowerOn(ctx context.Context, in PowerOnInput) (PowerOutcome, error) {
	t, err := r.powerTerminal(ctx, in.MAC)
	if err != nil {
		return PowerOutcome{}, err
	}
	now := r.now()
	if r.agentUp(t.MAC, now) {
		return PowerOutcome{Outcome: PowerAlreadyOn}, nil
	}
	neverSeen := t.LastSeen.IsZero() || t.LastSeen.Unix() <= 0
	if !neverSeen && r.Segment.IsValid() && t.LastIP != "" {
		if ip, err := netip.ParseAddr(t.LastIP); err == nil && !r.Segment.Contains(ip.Unmap()) {
			return PowerOutcome{Outcome: PowerRefused, Reason: fmt.Sprintf(
				"last seen at %s, which is not on the region's boot segment %s: Wake-on-LAN does not cross routers", ip, r.Segment)}, nil
		}
	}
	if r.Waker == nil {
		return PowerOutcome{Outcome: PowerRefused, Reason: "region " + r.ID + " has no boot service to send Wake-on-LAN from (region.boot.enabled)"}, nil
	}
	timeout, every := in.Timeout, in.Every
	if timeout <= 0 {
		timeout = r.wakeTimeout()
	}
	if timeout <= 0 {
		timeout = DefaultWakeTimeout
	}
	if every <= 0 {
		every = DefaultWakeEvery
	}
	start := now
	tick := time.NewTicker(every)
	defer tick.Stop()
	sent := 0
	for {
		if err := r.Waker.Wake(ctx, t.MAC); err != nil {
			return PowerOutcome{}, fmt.Errorf("Wake-on-LAN for %s: %w", terminalName(t), err)
		}
		sent++
		activity.RecordHeartbeat(ctx, sent)
		select {
		case <-ctx.Done():
			return PowerOutcome{}, ctx.Err()
		case <-tick.C:
		}
		seen, err := r.seenSince(ctx, t.MAC, start)
		if err != nil {
			return PowerOutcome{}, err
		}
		if seen {
			return PowerOutcome{Outcome: PowerWoke}, nil
		}
		if r.now().Sub(start) >= timeout {
			reason := fmt.Sprintf("no network boot or agent within %s of %d Wake-on-LAN packets", timeout, sent)
			if neverSeen {
				reason += "; never seen on this segment: is its MAC right, and Wake-on-LAN on in its firmware?"
			} else {
				reason += fmt.Sprintf("; last seen %s at %s", t.LastSeen.UTC().Format(time.RFC3339), t.LastIP)
			}
			return PowerOutcome{Outcome: PowerNoAnswer, Reason: reason}, nil
		}
	}
}

// PowerCommandInput asks for one terminal to be powered off or rebooted through its agent.
type PowerCommandInput struct {
	MAC     string
	Command agentwire.Command // agentwire.CommandPoweroff or agentwire.CommandReboot
	// Timeout bounds the wait for the agent to take the command and, for a poweroff, to stop
	// polling (0: DefaultAnswerTimeout).
	Timeout time.Duration
}

// PowerCommand powers a terminal off or reboots it through its agent, and says how that went:
// the command counts as done when the agent's poll took it (the mailbox records that) and, for
// a poweroff, when the agent stops polling. A terminal with a task running (someone's capture
// or deploy) is refused, naming the task; one whose agent does not poll did not answer.
// PowerTerminal, which tasks use to reboot a terminal into them, is a different thing: it
// wakes a terminal nobody listens for.
func (r *Region) PowerCommand(ctx context.Context, in PowerCommandInput) (PowerOutcome, error) {
	if in.Command != agentwire.CommandReboot && in.Command != agentwire.CommandPoweroff {
		return PowerOutcome{}, ErrBadInput.New(fmt.Sprintf("power command %q is not reboot or poweroff", in.Command), nil)
	}
	t, err := r.powerTerminal(ctx, in.MAC)
	if err != nil {
		return PowerOutcome{}, err
	}
	busy, err := r.Inventory.TaskUnderWay(ctx, t.MAC, r.now())
	if err != nil {
		return PowerOutcome{}, err
	}
	if busy != nil {
		return PowerOutcome{Outcome: PowerRefused, Reason: fmt.Sprintf("task %s (%s) is running on it; cancel it first ('tms task cancel')",
			busy.Task, busy.Kind)}, nil
	}
	if r.Agents == nil || r.Mailbox == nil {
		return PowerOutcome{Outcome: PowerNoAnswer, Reason: "region " + r.ID + " has no agent API"}, nil
	}
	sent := r.now()
	if !r.agentUp(t.MAC, sent) {
		last, _, _, _ := r.Mailbox.Polls(t.MAC)
		reason := "no agent has polled this region for commands since it started"
		if !last.IsZero() {
			reason = "no agent has polled since " + last.UTC().Format(time.RFC3339)
		}
		return PowerOutcome{Outcome: PowerNoAnswer, Reason: reason}, nil
	}
	timeout := in.Timeout
	if timeout <= 0 {
		timeout = DefaultAnswerTimeout
	}
	r.Agents.Send(t.MAC, in.Command)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var takenAt time.Time
	for {
		select {
		case <-ctx.Done():
			return PowerOutcome{}, ctx.Err()
		case <-tick.C:
		}
		activity.RecordHeartbeat(ctx, !takenAt.IsZero())
		last, polling, taken, at := r.Mailbox.Polls(t.MAC)
		now := r.now()
		if takenAt.IsZero() && taken == in.Command && !at.Before(sent) {
			takenAt = at
			if in.Command == agentwire.CommandReboot {
				return PowerOutcome{Outcome: PowerRebooted}, nil
			}
		}
		if !takenAt.IsZero() && !polling && !last.After(takenAt) {
			return PowerOutcome{Outcome: PowerOff}, nil
		}
		if now.Sub(sent) >= timeout {
			if takenAt.IsZero() {
				return PowerOutcome{Outcome: PowerNoAnswer, Reason: fmt.Sprintf("its agent did not take the %s within %s (last poll %s)",
					in.Command, timeout, last.UTC().Format(time.RFC3339))}, nil
			}
			return PowerOutcome{Outcome: PowerNoAnswer, Reason: fmt.Sprintf("its agent took the poweroff at %s but still polls %s later",
				takenAt.UTC().Format(time.RFC3339), timeout)}, nil
		}
	}
}

// powerTerminal is the enrolled terminal mac names.
func (r *Region) powerTerminal(ctx context.Context, mac string) (state.Terminal, error) {
	if _, err := state.NormalizeMAC(mac); err != nil {
		return state.Terminal{}, ErrBadInput.New(err.Error(), err)
	}
	return r.terminal(ctx, mac)
}

// agentUp reports whether mac's agent polled within UpWindow (or polls now) and has not taken a
// poweroff since its last poll began.
func (r *Region) agentUp(mac string, now time.Time) bool {
	if r.Mailbox == nil {
		return false
	}
	last, polling, taken, takenAt := r.Mailbox.Polls(mac)
	if taken == agentwire.CommandPoweroff && !last.After(takenAt) {
		return false
	}
	return polling || (!last.IsZero() && now.Sub(last) < UpWindow)
}

// seenSince reports whether mac was seen after start: an agent poll, or the inventory's record
// of a DHCP request or iPXE script fetch.
func (r *Region) seenSince(ctx context.Context, mac string, start time.Time) (bool, error) {
	if r.Mailbox != nil {
		if last, _, _, _ := r.Mailbox.Polls(mac); last.After(start) {
			return true, nil
		}
	}
	t, err := r.Inventory.Terminal(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return false, ErrUnknownTerminal.New("terminal "+mac+" is no longer in region "+r.ID, err)
	}
	if err != nil {
		return false, err
	}
	return t.LastSeen.After(start), nil
}
