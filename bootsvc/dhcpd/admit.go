package dhcpd

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Admission. Any PC of the lab can invent MACs, so what a client that is not
// admitted may cost is bounded:
//
//   - full mode leases only to admitted MACs: Config.AllowAll, a MAC or
//     prefix in Config.Allow, or Config.Admit (the region's enrolled
//     terminals). The others get no answer;
//   - requests from MACs that are not admitted pass a token bucket per MAC
//     and one for all of them together, in both modes; what exceeds them is
//     dropped before any other work (no Seen, no ScriptURL, no log line);
//   - refusals, and requests dropped because too many were being answered
//     at once, are logged at most once per refusalLogEvery, with counts.

// Defaults of the rate limits of clients that are not admitted.
const (
	// DefaultUnknownPerMAC is how many requests a minute one MAC that is
	// not admitted may send. A PC's firmware, iPXE and operating system
	// send a few each at boot.
	DefaultUnknownPerMAC = 12
	// DefaultUnknownTotal is how many requests a second all MACs that are
	// not admitted may send together; bursts of five seconds' worth pass.
	DefaultUnknownTotal = 20

	// maxTracked bounds the per-MAC buckets. Only requests that passed the
	// overall bucket create one, and one is forgotten once it has refilled,
	// so DefaultUnknownTotal × a minute stays well below it.
	maxTracked = 4096
	// refusalLogEvery is how often refusals are logged at most.
	refusalLogEvery = time.Minute
)

// Stats counts what the server refused or ignored since it started.
type Stats struct {
	Refused        uint64 // requests of clients that are not admitted, full mode: no lease
	RateLimited    uint64 // requests of clients that are not admitted, dropped by a rate limit
	AdmitErrors    uint64 // requests refused because Admit failed
	ReleaseIgnored uint64 // RELEASEs not from the lease holder (RFC 2131 4.4.6)
	DeclineIgnored uint64 // DECLINEs of an address not offered or leased to the MAC
	Overloaded     uint64 // requests dropped because maxInFlight were being answered
	OtherServer    uint64 // proxy mode: requests left to another server of the region (Config.Answer)
}

type counters struct {
	refused, rateLimited, admitErrors, releaseIgnored, declineIgnored, overloaded, otherServer atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Refused:        s.counts.refused.Load(),
		RateLimited:    s.counts.rateLimited.Load(),
		AdmitErrors:    s.counts.admitErrors.Load(),
		ReleaseIgnored: s.counts.releaseIgnored.Load(),
		DeclineIgnored: s.counts.declineIgnored.Load(),
		Overloaded:     s.counts.overloaded.Load(),
		OtherServer:    s.counts.otherServer.Load(),
	}
}

// admission is the verdict on one request's MAC.
type admission int

const (
	admitted admission = iota // lease and answer as usual
	unknown                   // not admitted, within the rate limits
	dropped                   // not admitted and over a rate limit: no answer
	failed                    // full mode: Admit failed: no answer
)

// admit decides on mac. It asks Config.Admit only for MACs that the allow
// list does not admit and whose own bucket is not empty, so a flood from one
// MAC costs no lookups.
func (s *Server) admit(mac net.HardwareAddr) admission {
	if s.cfg.AllowAll || s.allowed(mac) {
		return admitted
	}
	now := s.now()
	var key [6]byte
	copy(key[:], mac)
	if s.limit.empty(key, now) {
		s.counts.rateLimited.Add(1)
		s.tally.note(s.log, now, tallyLimited, mac, nil)
		return dropped
	}
	if s.cfg.Admit != nil {
		ok, err := s.cfg.Admit(mac)
		if err != nil {
			// Could not ask: say so, but not once per packet. Full
			// mode refuses (fail closed); proxy mode treats the
			// client as unknown, which it answers anyway.
			s.counts.admitErrors.Add(1)
			s.tally.note(s.log, now, tallyAdmitError, mac, err)
			if s.cfg.Mode == ModeFull {
				return failed
			}
		}
		if ok {
			return admitted
		}
	}
	if !s.limit.take(key, now) {
		s.counts.rateLimited.Add(1)
		s.tally.note(s.log, now, tallyLimited, mac, nil)
		return dropped
	}
	return unknown
}

func (s *Server) allowed(mac net.HardwareAddr) bool {
	for _, p := range s.cfg.Allow {
		if bytes.HasPrefix(mac, p) {
			return true
		}
	}
	return false
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(burst, b.tokens+d*rate)
	}
	b.last = now
}

// limiter holds the token buckets of clients that are not admitted: one per
// MAC (at most maxTracked; a full one is forgotten) and one for them all.
type limiter struct {
	macRate, macBurst     float64 // tokens a second; capacity
	totalRate, totalBurst float64

	mu        sync.Mutex
	macs      map[[6]byte]*bucket
	total     bucket
	lastSweep time.Time
}

func newLimiter(perMACPerMinute, totalPerSecond int, now time.Time) *limiter {
	return &limiter{
		macRate: float64(perMACPerMinute) / 60, macBurst: float64(perMACPerMinute),
		totalRate: float64(totalPerSecond), totalBurst: 5 * float64(totalPerSecond),
		macs:  map[[6]byte]*bucket{},
		total: bucket{tokens: 5 * float64(totalPerSecond), last: now},
	}
}

// setRates changes the limits; buckets keep their tokens, capped at the new bursts.
func (l *limiter) setRates(perMACPerMinute, totalPerSecond int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.macRate, l.macBurst = float64(perMACPerMinute)/60, float64(perMACPerMinute)
	l.totalRate, l.totalBurst = float64(totalPerSecond), 5*float64(totalPerSecond)
	l.total.tokens = min(l.total.tokens, l.totalBurst)
	for _, b := range l.macs {
		b.tokens = min(b.tokens, l.macBurst)
	}
}

// SetUnknownLimits changes Config.UnknownPerMAC and Config.UnknownTotal while the server runs
// (zero: the defaults; negative values are ignored). Tokens already in the buckets stay, up
// to the new bursts, so lowering a limit takes effect at once.
func (s *Server) SetUnknownLimits(perMAC, total int) {
	if perMAC < 0 || total < 0 {
		return
	}
	if perMAC == 0 {
		perMAC = DefaultUnknownPerMAC
	}
	if total == 0 {
		total = DefaultUnknownTotal
	}
	s.limit.setRates(perMAC, total)
}

// empty reports whether mac's own bucket has no token left.
func (l *limiter) empty(mac [6]byte, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.macs[mac]
	if b == nil {
		return false
	}
	b.refill(now, l.macRate, l.macBurst)
	return b.tokens < 1
}

// take spends a token of mac's bucket and one of the overall bucket, and
// reports whether both had one.
func (l *limiter) take(mac [6]byte, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.macs[mac]
	if b != nil {
		b.refill(now, l.macRate, l.macBurst)
		if b.tokens < 1 {
			return false
		}
	}
	l.total.refill(now, l.totalRate, l.totalBurst)
	if l.total.tokens < 1 {
		return false
	}
	l.total.tokens--
	if b == nil {
		if len(l.macs) >= maxTracked {
			l.sweep(now)
		}
		if len(l.macs) >= maxTracked {
			return true // not tracked; the overall bucket still bounds it
		}
		b = &bucket{tokens: l.macBurst, last: now}
		l.macs[mac] = b
	}
	b.tokens--
	return true
}

// sweep forgets the buckets that have refilled (no different from a new
// one), at most once a second so that a full table costs no time per packet.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Second {
		return
	}
	l.lastSweep = now
	for k, b := range l.macs {
		b.refill(now, l.macRate, l.macBurst)
		if b.tokens >= l.macBurst {
			delete(l.macs, k)
		}
	}
}

func (l *limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.macs)
}

// tally turns refusals into at most one log line per refusalLogEvery.
type tally struct {
	mu      sync.Mutex
	last    time.Time // of the last line; zero: none yet
	counts  [4]uint64 // by tallyKind, since the last line
	lastMAC string
	lastErr error
}

type tallyKind int

const (
	tallyRefused tallyKind = iota
	tallyLimited
	tallyAdmitError
	tallyOverloaded // any request, admitted or not, dropped for want of a slot
)

func (t *tally) note(log *slog.Logger, now time.Time, k tallyKind, mac net.HardwareAddr, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[k]++
	if mac != nil {
		t.lastMAC = mac.String()
	}
	if err != nil {
		t.lastErr = err
	}
	if !t.last.IsZero() && now.Sub(t.last) < refusalLogEvery {
		return
	}
	t.flushLocked(log, now)
}

// flush logs what was counted since the last line, if anything and if that
// line is refusalLogEvery old.
func (t *tally) flush(log *slog.Logger, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts != [4]uint64{} && now.Sub(t.last) >= refusalLogEvery {
		t.flushLocked(log, now)
	}
}

func (t *tally) flushLocked(log *slog.Logger, now time.Time) {
	level := slog.LevelInfo
	attrs := []any{"refused", t.counts[tallyRefused], "rate_limited", t.counts[tallyLimited], "last_mac", t.lastMAC}
	if t.counts[tallyLimited] > 0 || t.counts[tallyAdmitError] > 0 || t.counts[tallyOverloaded] > 0 {
		level = slog.LevelWarn
	}
	if t.counts[tallyOverloaded] > 0 {
		attrs = append(attrs, "overloaded", t.counts[tallyOverloaded])
	}
	if t.counts[tallyAdmitError] > 0 {
		attrs = append(attrs, "admit_errors", t.counts[tallyAdmitError], "err", t.lastErr)
	}
	if !t.last.IsZero() {
		attrs = append(attrs, "since", t.last.Format(time.RFC3339))
	}
	log.Log(context.Background(), level, "dhcp: requests refused or dropped", attrs...)
	t.last = now
	t.counts = [4]uint64{}
	t.lastErr = nil
}
