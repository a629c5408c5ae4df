package initos

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t testing.TB, yiaddr string, opts ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.ParseIP(yiaddr))}, opts...)
	m, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLeaseSettingsRefuseUnusableAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		ack  *dhcpv4.DHCPv4
		ok   bool
	}{
		{"a plain lease", ack(t, "10.0.5.120", dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithRouter(net.ParseIP("10.0.5.1"))), true},
		{"no mask: the class default", ack(t, "10.0.5.120"), true},
		{"no address", ack(t, "0.0.0.0"), false},
		{"broadcast", ack(t, "255.255.255.255"), false},
		{"loopback", ack(t, "127.0.0.5"), false},
		{"multicast", ack(t, "224.0.0.9"), false},
		{"a /32", ack(t, "10.0.5.120", dhcpv4.WithNetmask(net.CIDRMask(32, 32))), false},
		{"a /0", ack(t, "10.0.5.120", dhcpv4.WithNetmask(net.CIDRMask(0, 32))), false},
		{"a mask with holes", ack(t, "10.0.5.120", dhcpv4.WithNetmask(net.IPMask{255, 0, 255, 0})), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := leaseSettings(tc.ack)
			if (err == nil) != tc.ok {
				t.Fatalf("leaseSettings: %+v, %v; want ok %v", st, err, tc.ok)
			}
		})
	}
	st, _ := leaseSettings(ack(t, "10.0.5.120", dhcpv4.WithRouter(net.ParseIP("224.0.0.1")),
		dhcpv4.WithDNS(net.ParseIP("10.0.5.1"), net.ParseIP("0.0.0.0"), net.ParseIP("9.9.9.9"), net.ParseIP("1.1.1.1"), net.ParseIP("8.8.8.8"))))
	if st.Router != nil || len(st.DNS) != 3 || !st.DNS[0].Equal(net.ParseIP("10.0.5.1")) || !st.DNS[1].Equal(net.ParseIP("9.9.9.9")) {
		t.Fatalf("odd router and DNS servers kept: %+v", st)
	}
}

// FuzzLeaseSettings feeds the in-memory OS's DHCP client arbitrary answers, as any machine on
// the segment can send: it never panics, and what it accepts is a usable address and netmask.
func FuzzLeaseSettings(f *testing.F) {
	f.Add(ack(f, "10.0.5.120", dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithRouter(net.ParseIP("10.0.5.1")),
		dhcpv4.WithDNS(net.ParseIP("10.0.5.1"))).ToBytes())
	f.Add(ack(f, "0.0.0.0").ToBytes())
	f.Add([]byte{2, 1, 6, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		st, err := leaseSettings(m)
		if err != nil {
			return
		}
		ones, bits := st.Mask.Size()
		if !usableIPv4(st.IP) || bits != 32 || ones < 1 || ones > 31 || len(st.DNS) > 3 || st.Router != nil && !usableIPv4(st.Router) {
			t.Fatalf("accepted %+v", st)
		}
	})
}
