package dhcpd

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// inventory stands in for the region's terminals: enrolled MACs, and an
// error to fail lookups with.
type inventory struct {
	mu       sync.Mutex
	enrolled map[string]bool
	err      error
	lookups  int
}

func (inv *inventory) admit(mac net.HardwareAddr) (bool, error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.lookups++
	if inv.err != nil {
		return false, inv.err
	}
	return inv.enrolled[mac.String()], nil
}

// lines counts the log lines that contain s.
func lines(logs *bytes.Buffer, s string) int {
	n := 0
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// randomMAC is a MAC that a PC on the segment could invent.
func randomMAC(rnd *rand.Rand) net.HardwareAddr {
	hw := make(net.HardwareAddr, 6)
	for i := range hw {
		hw[i] = byte(rnd.Uint32())
	}
	hw[0] = hw[0]&^1 | 2 // unicast, locally administered
	return hw
}

func TestFullFloodOfInventedMACsBindsNothing(t *testing.T) {
	enrolled := mac(1)
	allowed := net.HardwareAddr{0x02, 0xaa, 0xbb, 0, 0, 7}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		flood func(*rand.Rand) net.HardwareAddr // MACs the attacker invents
		want  []string                          // MACs that may hold a lease after the flood
	}{
		{"enrolled only (default)", func(*Config) {}, randomMAC, []string{enrolled.String()}},
		{"allow list: only the listed MAC and prefix", func(c *Config) {
			c.Allow = []net.HardwareAddr{allowed, {0x02, 0xaa, 0xbc}}
		}, func(rnd *rand.Rand) net.HardwareAddr {
			hw := randomMAC(rnd)
			if rnd.IntN(2) == 0 {
				copy(hw, []byte{0x02, 0xaa, 0xbb}) // one byte off the prefix
			}
			return hw
		}, []string{enrolled.String(), allowed.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			var logs bytes.Buffer
			inv := &inventory{enrolled: map[string]bool{enrolled.String(): true}}
			cfg := fullConfig(&r)
			cfg.AllowAll = false
			cfg.Admit = inv.admit
			cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
			tc.edit(&cfg)
			s := newServer(t, cfg)
			now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
			s.now = func() time.Time { return now }

			rnd := rand.New(rand.NewPCG(1, 2))
			pool := netip.MustParseAddr("10.77.0.100")
			for i := range 3000 {
				hw := tc.flood(rnd)
				var req *dhcpv4.DHCPv4
				switch i % 3 {
				case 0:
					req = discover(t, hw, kinds[0].mods...)
				case 1: // INIT-REBOOT for an address of the pool
					req = request(t, hw, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(pool.AsSlice()))))
					pool = pool.Next()
					if !cfg.Pool.contains(pool) {
						pool = cfg.Pool.Start
					}
				case 2: // SELECTING this server
					req = request(t, hw, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))),
						dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(pool.AsSlice()))))
				}
				if reply := handle(t, s, req); reply != nil && reply.MessageType() != dhcpv4.MessageTypeNak {
					t.Fatalf("answered invented MAC %v:\n%s", hw, reply.Summary())
				}
				if i%100 == 0 {
					now = now.Add(time.Second / 10)
				}
			}
			if n := len(s.leases.byIP); n != 0 {
				t.Fatalf("the flood holds %d addresses of the pool", n)
			}
			for _, m := range tc.want {
				hw, _ := net.ParseMAC(m)
				dora(t, s, hw)
			}
			for m := range s.leases.byMAC {
				if !strings.Contains(strings.Join(tc.want, " "), m) {
					t.Fatalf("lease for %s, which is not admitted", m)
				}
			}
			st := s.Stats()
			if st.Refused == 0 || st.RateLimited == 0 || st.Refused+st.RateLimited != 3000 {
				t.Fatalf("stats %+v: want 3000 refused or rate limited", st)
			}
			// 30 seconds of flood: the first line, then none until a
			// minute has passed.
			if n := lines(&logs, "requests refused or dropped"); n != 1 {
				t.Fatalf("%d log lines about refusals, want 1:\n%s", n, logs.String())
			}
			// Seen (a database write per call in a region) is bounded
			// by the overall bucket: its burst plus 30 s of its rate.
			if max := 5*DefaultUnknownTotal + 30*DefaultUnknownTotal; len(r.seen) > max {
				t.Fatalf("Seen called for %d invented MACs, more than %d", len(r.seen), max)
			}
		})
	}
}

func TestFullAdmission(t *testing.T) {
	lookupFailed := errors.New("inventory: database is locked")
	for _, tc := range []struct {
		name      string
		edit      func(*Config, *inventory)
		mac       net.HardwareAddr
		wantLease bool
	}{
		{"enrolled terminal", func(*Config, *inventory) {}, mac(1), true},
		{"seen but not enrolled", func(*Config, *inventory) {}, mac(2), false},
		{"MAC on the allow list", func(c *Config, _ *inventory) { c.Allow = []net.HardwareAddr{mac(2)} }, mac(2), true},
		{"MAC under an allowed prefix", func(c *Config, _ *inventory) { c.Allow = []net.HardwareAddr{{0x52, 0x54, 0x00}} }, mac(2), true},
		{"MAC outside the allowed prefix", func(c *Config, _ *inventory) { c.Allow = []net.HardwareAddr{{0x52, 0x54, 0x01}} }, mac(2), false},
		{"allow all", func(c *Config, _ *inventory) { c.AllowAll = true }, mac(2), true},
		{"inventory fails: refused", func(_ *Config, inv *inventory) { inv.err = lookupFailed }, mac(1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			var logs bytes.Buffer
			inv := &inventory{enrolled: map[string]bool{mac(1).String(): true}}
			cfg := fullConfig(&r)
			cfg.AllowAll = false
			cfg.Admit = inv.admit
			cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
			tc.edit(&cfg, inv)
			s := newServer(t, cfg)
			offer := handle(t, s, discover(t, tc.mac, kinds[1].mods...))
			if got := offer != nil; got != tc.wantLease {
				t.Fatalf("offer %v, want %v", offer, tc.wantLease)
			}
			if !tc.wantLease {
				if len(s.leases.byIP) != 0 {
					t.Fatal("a refused client holds an address")
				}
				// A refused PXE client is still seen, so an admin can enroll it.
				if _, ok := r.seen[tc.mac.String()]; !ok && inv.err == nil {
					t.Fatal("refused PXE client not reported to Seen")
				}
				if inv.err != nil && !strings.Contains(logs.String(), lookupFailed.Error()) {
					t.Fatalf("inventory error not logged:\n%s", logs.String())
				}
			}
		})
	}
}

func TestConfigNeedsAdmissionInFullMode(t *testing.T) {
	var r recorder
	cfg := fullConfig(&r)
	cfg.AllowAll = false
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "dhcp admit") {
		t.Fatalf("full mode without admission: %v", err)
	}
	cfg.Allow = []net.HardwareAddr{{}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "dhcp allow") {
		t.Fatalf("empty allow prefix: %v", err)
	}
}

func TestProxyRateLimitsUnknownClients(t *testing.T) {
	var r recorder
	inv := &inventory{enrolled: map[string]bool{mac(1).String(): true}}
	cfg := proxyConfig(&r)
	cfg.Admit = inv.admit
	s := newServer(t, cfg)
	now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }

	// One PC that is not enrolled: answered (it boots its own disk), up
	// to its own limit per minute.
	answered := 0
	for range 50 {
		if handle(t, s, discover(t, mac(2), kinds[0].mods...)) != nil {
			answered++
		}
	}
	if answered != DefaultUnknownPerMAC {
		t.Fatalf("one unknown MAC answered %d times in a burst, want %d", answered, DefaultUnknownPerMAC)
	}
	lookups := inv.lookups
	handle(t, s, discover(t, mac(2), kinds[0].mods...))
	if inv.lookups != lookups {
		t.Fatal("a MAC over its limit still costs an inventory lookup")
	}
	now = now.Add(time.Minute)
	if handle(t, s, discover(t, mac(2), kinds[0].mods...)) == nil {
		t.Fatal("not answered after its bucket refilled")
	}

	// Invented MACs: at most the overall burst is answered, and the
	// enrolled terminal is answered all along.
	rnd := rand.New(rand.NewPCG(3, 4))
	answered = 0
	for i := range 1000 {
		if handle(t, s, discover(t, randomMAC(rnd), kinds[0].mods...)) != nil {
			answered++
		}
		if i%100 == 0 && handle(t, s, discover(t, mac(1), kinds[0].mods...)) == nil {
			t.Fatal("enrolled terminal not answered during a flood")
		}
	}
	if answered > 5*DefaultUnknownTotal {
		t.Fatalf("%d invented MACs answered, more than the burst of %d", answered, 5*DefaultUnknownTotal)
	}
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	l := newLimiter(DefaultUnknownPerMAC, 1000, now)
	rnd := rand.New(rand.NewPCG(5, 6))
	passed := 0
	for i := range 200_000 {
		var k [6]byte
		copy(k[:], randomMAC(rnd))
		if l.take(k, now) {
			passed++
		}
		if i%1000 == 0 {
			now = now.Add(time.Second)
		}
	}
	if n := l.tracked(); n > maxTracked {
		t.Fatalf("%d MACs tracked, more than %d", n, maxTracked)
	}
	if passed > 5*1000+200*1000 {
		t.Fatalf("%d requests passed the overall limit", passed)
	}
	// Entries expire: after a minute without requests, a sweep forgets them.
	now = now.Add(2 * time.Minute)
	l.mu.Lock()
	l.sweep(now)
	l.mu.Unlock()
	if n := l.tracked(); n != 0 {
		t.Fatalf("%d MACs still tracked after their buckets refilled", n)
	}
}

func TestReleaseOnlyFromLeaseHolder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release func(a, b netip.Addr) (*dhcpv4.DHCPv4, netip.Addr) // a: mac(1)'s lease, b: mac(2)'s
		ends    bool                                               // mac(1)'s lease ends
	}{
		{"from the holder's address", func(a, _ netip.Addr) (*dhcpv4.DHCPv4, netip.Addr) {
			return releaseOf(mac(1), a), a
		}, true},
		{"holder's MAC and ciaddr, sent from another address", func(a, b netip.Addr) (*dhcpv4.DHCPv4, netip.Addr) {
			return releaseOf(mac(1), a), b
		}, false},
		{"holder's MAC and ciaddr, sent from no address", func(a, _ netip.Addr) (*dhcpv4.DHCPv4, netip.Addr) {
			return releaseOf(mac(1), a), netip.Addr{}
		}, false},
		{"another MAC naming the holder's address", func(a, _ netip.Addr) (*dhcpv4.DHCPv4, netip.Addr) {
			return releaseOf(mac(2), a), a
		}, false},
		{"holder's MAC with another ciaddr", func(_, b netip.Addr) (*dhcpv4.DHCPv4, netip.Addr) {
			return releaseOf(mac(1), b), b
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			s := newServer(t, fullConfig(&r))
			now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
			s.now = func() time.Time { return now }
			a, b := dora(t, s, mac(1)), dora(t, s, mac(2))
			req, from := tc.release(a, b)
			handleFrom(t, s, req, from)
			l := s.leases.byMAC[mac(1).String()]
			if ended := !l.Expires.After(now); ended != tc.ends {
				t.Fatalf("lease ended: %v, want %v (%+v)", ended, tc.ends, l)
			}
			if l2 := s.leases.byMAC[mac(2).String()]; l2.IP != b || !l2.Expires.After(now) {
				t.Fatalf("the other lease changed: %+v", l2)
			}
			if got, want := s.Stats().ReleaseIgnored, map[bool]uint64{true: 0, false: 1}[tc.ends]; got != want {
				t.Fatalf("ReleaseIgnored %d, want %d", got, want)
			}
		})
	}
}

func releaseOf(hw net.HardwareAddr, ci netip.Addr) *dhcpv4.DHCPv4 {
	d, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
		dhcpv4.WithClientIP(net.IP(ci.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))))
	return d
}

func TestDeclineOnlyForOfferedAddress(t *testing.T) {
	free := netip.MustParseAddr("10.77.0.150")
	for _, tc := range []struct {
		name     string
		decline  func(t *testing.T, s *Server, a, b netip.Addr) *dhcpv4.DHCPv4 // a: mac(1)'s lease, b: mac(2)'s
		declined func(a, b netip.Addr) netip.Addr                              // the address taken out of use; invalid: none
	}{
		{"its own lease", func(t *testing.T, _ *Server, a, _ netip.Addr) *dhcpv4.DHCPv4 {
			return declineOf(mac(1), a, serverIP)
		}, func(a, _ netip.Addr) netip.Addr { return a }},
		{"another MAC's lease", func(t *testing.T, _ *Server, _, b netip.Addr) *dhcpv4.DHCPv4 {
			return declineOf(mac(1), b, serverIP)
		}, nil},
		{"an address offered to nobody", func(t *testing.T, _ *Server, _, _ netip.Addr) *dhcpv4.DHCPv4 {
			return declineOf(mac(1), free, serverIP)
		}, nil},
		{"its own lease, naming another server", func(t *testing.T, _ *Server, a, _ netip.Addr) *dhcpv4.DHCPv4 {
			return declineOf(mac(1), a, netip.MustParseAddr("10.77.0.254"))
		}, nil},
		{"its own lease after it ended", func(t *testing.T, s *Server, a, _ netip.Addr) *dhcpv4.DHCPv4 {
			handle(t, s, releaseOf(mac(1), a))
			return declineOf(mac(1), a, serverIP)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			s := newServer(t, fullConfig(&r))
			now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
			s.now = func() time.Time { return now }
			a, b := dora(t, s, mac(1)), dora(t, s, mac(2))
			before := map[netip.Addr]lease{}
			for ip, l := range s.leases.byIP {
				before[ip] = *l
			}
			handle(t, s, tc.decline(t, s, a, b))
			var want netip.Addr
			if tc.declined != nil {
				want = tc.declined(a, b)
			}
			for _, ip := range []netip.Addr{a, b, free} {
				l := s.leases.byIP[ip]
				isDeclined := l != nil && l.MAC == "" && l.Expires.After(now)
				if isDeclined != (ip == want) {
					t.Fatalf("%v declined: %v, want %v (%+v)", ip, isDeclined, ip == want, l)
				}
				if ip != want && ip != a && (l == nil) != (before[ip] == lease{}) {
					t.Fatalf("%v changed: %+v, was %+v", ip, l, before[ip])
				}
			}
			if got, wantN := s.Stats().DeclineIgnored, map[bool]uint64{true: 0, false: 1}[want.IsValid()]; got != wantN {
				t.Fatalf("DeclineIgnored %d, want %d", got, wantN)
			}
		})
	}
}

func declineOf(hw net.HardwareAddr, ip, sid netip.Addr) *dhcpv4.DHCPv4 {
	d, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(ip.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(sid.AsSlice()))))
	return d
}

func TestDeclinesCannotEmptyThePool(t *testing.T) {
	var r recorder
	cfg := fullConfig(&r)
	cfg.Pool = Pool{netip.MustParseAddr("10.77.0.100"), netip.MustParseAddr("10.77.0.115")} // 16: 2 may be declined
	s := newServer(t, cfg)
	for range 10 {
		ip := dora(t, s, mac(1))
		handle(t, s, declineOf(mac(1), ip, serverIP))
	}
	if n := s.leases.declined(s.now()); n != 2 {
		t.Fatalf("%d addresses declined, want 2 (1/8 of the pool)", n)
	}
}

func TestLogsShowMACsAsText(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var r recorder
	full := fullConfig(&r)
	full.AllowAll = false
	full.Allow = []net.HardwareAddr{mac(1)}
	full.Log = log
	s := newServer(t, full)
	dora(t, s, mac(1), kinds[1].mods...)
	handle(t, s, discover(t, mac(2), kinds[1].mods...))                      // refused
	handle(t, s, discover(t, mac(3), archOpt(25), vendorClass("PXEClient"))) // refused: no boot file either
	proxy := proxyConfig(&r)
	proxy.Log = log
	p := newServer(t, proxy)
	handle(t, p, discover(t, mac(1), kinds[0].mods...))
	handle(t, p, discover(t, mac(4), vendorClass("PXEClient"), archOpt(25))) // no boot file: warns

	out := logs.String()
	for _, m := range []net.HardwareAddr{mac(1), mac(2), mac(4)} {
		if !strings.Contains(out, "mac="+m.String()) && !strings.Contains(out, "last_mac="+m.String()) {
			t.Errorf("no mac=%s in the log", m)
		}
	}
	if strings.Contains(out, `\x00`) || strings.Contains(out, `mac="`) {
		t.Errorf("a MAC logged as raw bytes:\n%s", out)
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestOverloadIsCountedNotLoggedPerPacket(t *testing.T) {
	var r recorder
	var logs bytes.Buffer
	cfg := fullConfig(&r)
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	s := newServer(t, cfg)
	sem := make(chan struct{}, maxInFlight)
	for range maxInFlight {
		sem <- struct{}{} // every slot busy
	}
	h := s.handler(sem)
	for i := range 1000 {
		h(nil, &net.UDPAddr{IP: net.IPv4(10, 77, 0, 9), Port: 68}, discover(t, mac(byte(i))))
	}
	if st := s.Stats(); st.Overloaded != 1000 {
		t.Fatalf("stats %+v, want 1000 overloaded", st)
	}
	if n := lines(&logs, "level="); n != 1 || !strings.Contains(logs.String(), "overloaded=1") {
		t.Fatalf("%d log lines for 1000 dropped requests, want 1 with the count:\n%s", n, logs.String())
	}
}

func TestProxyAnswersWhenTheInventoryFails(t *testing.T) {
	var r recorder
	var logs bytes.Buffer
	inv := &inventory{err: errors.New("inventory: database is locked")}
	cfg := proxyConfig(&r)
	cfg.Admit = inv.admit
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	s := newServer(t, cfg)
	if handle(t, s, discover(t, mac(1), kinds[0].mods...)) == nil {
		t.Fatal("proxy dropped a PXE client because the inventory failed")
	}
	if s.Stats().AdmitErrors != 1 || !strings.Contains(logs.String(), "database is locked") {
		t.Fatalf("inventory error not counted and logged: %+v\n%s", s.Stats(), logs.String())
	}
}

func TestUnknownLimitsChangeWhileRunning(t *testing.T) {
	var r recorder
	s := newServer(t, proxyConfig(&r))
	now := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	burst := func(m net.HardwareAddr) int {
		n := 0
		for range 100 {
			if handle(t, s, discover(t, m, kinds[0].mods...)) != nil {
				n++
			}
		}
		return n
	}
	if got := burst(mac(2)); got != DefaultUnknownPerMAC {
		t.Fatalf("before: %d answered, want %d", got, DefaultUnknownPerMAC)
	}
	// Lowered: a new MAC gets the new burst at once, and the overall bucket shrinks too.
	s.SetUnknownLimits(3, 2)
	if got := burst(mac(3)); got != 3 {
		t.Fatalf("after lowering to 3 a minute: %d answered", got)
	}
	now = now.Add(time.Hour)
	rnd := rand.New(rand.NewPCG(5, 6))
	answered := 0
	for range 200 {
		if handle(t, s, discover(t, randomMAC(rnd), kinds[0].mods...)) != nil {
			answered++
		}
	}
	if answered != 5*2 {
		t.Fatalf("invented MACs after lowering the total to 2 a second: %d answered, want the burst of 10", answered)
	}
	// Raised: a MAC's bucket refills to the new burst.
	s.SetUnknownLimits(40, 20)
	now = now.Add(time.Hour)
	if got := burst(mac(4)); got != 40 {
		t.Fatalf("after raising to 40 a minute: %d answered", got)
	}
}
