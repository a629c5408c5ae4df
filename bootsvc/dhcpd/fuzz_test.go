package dhcpd

import (
	"net"
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
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})

	var r recorder
	proxy := newServer(f, proxyConfig(&r))
	full := newServer(f, fullConfig(&r))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		for _, s := range []*Server{proxy, full} {
			reply, err := s.Handle(req)
			if err != nil {
				t.Fatalf("%s: %v", s.cfg.Mode, err)
			}
			if reply != nil {
				checkWellFormed(t, s, req, reply)
			}
		}
	})
}
