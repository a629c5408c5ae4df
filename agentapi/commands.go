package agentapi

import (
	"net/http"
	"time"

	"tms/agentwire"
	"tms/state"
)

// MaxPoll is the longest a command poll is held open.
const MaxPoll = time.Minute

// CommandTTL is how long a command waits for a terminal's agent to poll: a reboot asked for
// while nothing listens must not fire an hour later.
const CommandTTL = 2 * time.Minute

// A mailbox holds the command waiting for one terminal. Only terminals whose agent signed a poll
// with its key, or that a workflow sent a command to, get one.
type mailbox struct {
	cmd      agentwire.Command
	at       time.Time
	wake     chan struct{}
	polling  int
	lastPoll time.Time
	lastSeen time.Time
	// taken and takenAt are the last command a poll took, and when: the acknowledgement that
	// the terminal's agent received it.
	taken   agentwire.Command
	takenAt time.Time
}

// Send leaves a command for a terminal's agent: the agent's poll that is waiting, or its next
// one within CommandTTL, gets it. A later command replaces one not yet taken.
func (s *Server) Send(mac string, command agentwire.Command) {
	mac, err := state.NormalizeMAC(mac)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.box(mac)
	b.cmd, b.at = command, s.now()
	close(b.wake)
	b.wake = make(chan struct{})
}

// Deliver passes a command to a terminal's agent if it polls this server (Connected), and
// reports whether it did: another of the region's servers asks (package sibling).
func (s *Server) Deliver(mac string, command agentwire.Command) bool {
	if !s.Connected(mac) {
		return false
	}
	s.Send(mac, command)
	return true
}

// Connected reports whether the terminal's agent is polling for commands, or did within the
// last minute.
func (s *Server) Connected(mac string) bool {
	mac, err := state.NormalizeMAC(mac)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.boxes[mac]
	return ok && (b.polling > 0 || s.now().Sub(b.lastPoll) < time.Minute)
}

// Polls says what the mailbox knows of a terminal's agent: when it last asked for commands,
// whether a poll is open now, and the last command a poll took and when. A terminal no agent
// ever polled for has the zero value.
func (s *Server) Polls(mac string) (last time.Time, polling bool, taken agentwire.Command, takenAt time.Time) {
	mac, err := state.NormalizeMAC(mac)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.boxes[mac]
	if !ok {
		return
	}
	return b.lastPoll, b.polling > 0, b.taken, b.takenAt
}

// box returns mac's mailbox; s.mu is held.
func (s *Server) box(mac string) *mailbox {
	if s.boxes == nil {
		s.boxes = map[string]*mailbox{}
	}
	b, ok := s.boxes[mac]
	if !ok {
		b = &mailbox{wake: make(chan struct{})}
		s.boxes[mac] = b
	}
	return b
}

// take returns the command waiting for mac, if it is still fresh, and the channel closed when
// the next one arrives; s.mu is held.
func (s *Server) take(b *mailbox) (agentwire.Command, <-chan struct{}) {
	now := s.now()
	b.lastPoll = now
	if b.cmd != "" {
		cmd, at := b.cmd, b.at
		b.cmd = ""
		if now.Sub(at) < CommandTTL {
			b.taken, b.takenAt = cmd, now
			return cmd, nil
		}
	}
	return "", b.wake
}

// commands is an agent's long poll: GET /v1/agent/commands?mac=M&wait=30s, signed with the
// terminal's agent key: a poll anyone could make for any MAC would swallow that terminal's
// commands and make it look awake.
func (s *Server) commands(w http.ResponseWriter, r *http.Request) {
	if !agentwire.IsKeySigned(r.Header.Get("Authorization")) {
		s.reply(w, r, nil, fail(http.StatusUnauthorized, "a command poll must be signed with the terminal's agent key (%s)", agentwire.KeyScheme))
		return
	}
	mac, err := s.checkKey(r, nil)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if q := r.URL.Query().Get("mac"); q != "" {
		if m, err := state.NormalizeMAC(q); err != nil || m != mac {
			s.reply(w, r, nil, fail(http.StatusBadRequest, "the poll names terminal %.32q but is signed by %s", q, mac))
			return
		}
	}
	wait := 30 * time.Second
	if q := r.URL.Query().Get("wait"); q != "" {
		if wait, err = time.ParseDuration(q); err != nil || wait < 0 {
			s.reply(w, r, nil, fail(http.StatusBadRequest, "wait %q is not a duration such as 30s", q))
			return
		}
	}
	wait = min(wait, MaxPoll)

	s.mu.Lock()
	b := s.box(mac)
	seen := s.now().Sub(b.lastSeen) > time.Minute
	if seen {
		b.lastSeen = s.now()
	}
	b.polling++
	cmd, wake := s.take(b)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		b.polling--
		s.mu.Unlock()
	}()
	if seen {
		// An agent in an installed OS shows the terminal is up; at most once a minute.
		if err := s.Inventory.Seen(r.Context(), mac, remoteIP(r), s.now()); err != nil {
			s.log().Warn("could not record a terminal as seen", "mac", mac, "err", err)
		}
	}
	if cmd == "" && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-wake:
			s.mu.Lock()
			cmd, _ = s.take(b)
			s.mu.Unlock()
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	s.reply(w, r, agentwire.CommandReply{Command: cmd}, nil)
}
