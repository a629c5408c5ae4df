package dhcpd

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds what a network peer could send to both modes: Handle must
// not panic, and what it answers must be a well-formed reply that, in proxy
// mode, carries no address.
func FuzzHandle(f *testing.F) {
	for _, k := range kinds {
		b := discover(f, mac(1), k.mods...).ToBytes()
		f.Add(b)
		f.Add(b[:len(b)/2]) // truncated
		f.Add(request(f, mac(1), append(k.mods, dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 5)))...).ToBytes())
	}
	f.Add(request(f, mac(2), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 100))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice())))).ToBytes())
	f.Add(request(f, mac(2), append(kinds[1].mods,
		dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0, 0, 0, 255}))...).ToBytes())
	f.Add(releaseOf(mac(2), netip.MustParseAddr("10.77.0.100")).ToBytes())
	f.Add(declineOf(mac(2), netip.MustParseAddr("10.77.0.100"), serverIP).ToBytes())
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})

	var r recorder
	proxy := newServer(f, proxyConfig(&r))
	full := newServer(f, fullConfig(&r))
	enrolledOnly := fullConfig(&r)
	enrolledOnly.AllowAll = false
	enrolledOnly.Admit = func(hw net.HardwareAddr) (bool, error) { return hw[5]%2 == 0, nil }
	admitting := newServer(f, enrolledOnly)
	// A region's second server: it answers the MACs chosen for it (even last byte) only.
	shared := proxyConfig(&r)
	shared.Answer = func(hw net.HardwareAddr) bool { return hw[5]%2 == 0 }
	sharing := newServer(f, shared)
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		for _, s := range []*Server{proxy, full, admitting, sharing} {
			reply, err := s.Handle(req, addr(req.ClientIPAddr))
			if err != nil {
				t.Fatalf("%s: %v", s.cfg.Mode, err)
			}
			if reply != nil {
				checkWellFormed(t, s, req, reply)
				if s == sharing && req.ClientHWAddr[5]%2 != 0 {
					t.Fatalf("the sharing server answered %s, which another server answers", req.ClientHWAddr)
				}
			}
		}
	})
}

// FuzzLeaseFile feeds the lease file parser what a damaged disk or a
// careless edit could leave: it must not panic, and what it accepts holds
// only leases of the pool, one per address and one per MAC, and saves to a
// file that parses to the same table.
func FuzzLeaseFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52:54:00:00:10:01","ip":"10.77.0.100","expires":"2026-09-01T09:00:00Z","bound":true}]}`))
	f.Add([]byte(`{"version":1,"leases":[{"mac":"","ip":"10.77.0.101","expires":"2026-09-01T09:00:00Z","bound":true},{"mac":"52:54:00:00:10:01","ip":"10.77.0.101"}]}`))
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52:54:00:00:10:01","ip":"10.99.0.1"},{"mac":"52:54:00:00:10:01","ip":"10.77.0.102"}]}`))
	f.Add([]byte(`{"version":1,"leases":[null]}`))
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52:54:00:00:10:01","ip":"::1"}]}`))
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52-54-00-00-10-01","ip":"10.77.0.100"}]}`))
	f.Add([]byte(`{"version":2,"leases":[]}`))
	f.Add([]byte(`{"version":1,"leases":[{"mac":"52:54:00:00:10:01","ip":"10.77.0.100","expires":"yesterday"}]}`))
	f.Add([]byte(`{"version":1,"lea`))
	f.Add([]byte{})
	pool := Pool{netip.MustParseAddr("10.77.0.100"), netip.MustParseAddr("10.77.0.199")}
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, _, err := parseLeases(pool, b)
		if err != nil {
			if !errors.Is(err, ErrLeaseFile) {
				t.Fatalf("error %v does not wrap ErrLeaseFile", err)
			}
			return
		}
		for ip, l := range tab.byIP {
			if l.IP != ip || !pool.contains(ip) {
				t.Fatalf("lease %+v under %v, pool %v", l, ip, pool)
			}
			if l.MAC != "" && tab.byMAC[l.MAC] != l {
				t.Fatalf("lease %+v not found by its MAC", l)
			}
		}
		if len(tab.byMAC) > len(tab.byIP) {
			t.Fatalf("%d MACs for %d addresses", len(tab.byMAC), len(tab.byIP))
		}
		tab.file = filepath.Join(t.TempDir(), "leases.json")
		if err := tab.save(); err != nil {
			t.Fatal(err)
		}
		again, _, err := loadLeases(pool, tab.file)
		if err != nil {
			t.Fatalf("saved table does not load: %v", err)
		}
		if len(again.byIP) != len(tab.byIP) || len(again.byMAC) != len(tab.byMAC) {
			t.Fatalf("saved %d leases, loaded %d", len(tab.byIP), len(again.byIP))
		}
	})
}
