package initos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nic is the network interface the agent talks through.
type nic struct {
	Name string
	MAC  net.HardwareAddr
	link netlink.Link
}

// upLink brings up the loopback and every Ethernet interface, and returns the first (by name)
// that has a link, waiting up to timeout for drivers to probe and cables to negotiate.
func upLink(ctx context.Context, log *slog.Logger, timeout time.Duration) (*nic, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			log.Warn("loopback not up", "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raised := map[string]bool{}
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("listing network interfaces: %w", err)
		}
		var names []string
		var withLink []netlink.Link
		for _, l := range links {
			a := l.Attrs()
			if l.Type() != "device" || a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
				continue
			}
			names = append(names, a.Name)
			if !raised[a.Name] {
				if err := netlink.LinkSetUp(l); err != nil {
					log.Warn("interface not brought up", "interface", a.Name, "err", err)
				} else {
					log.Info("interface up, waiting for link", "interface", a.Name, "mac", a.HardwareAddr.String())
				}
				raised[a.Name] = true
			}
			if a.OperState == netlink.OperUp || a.RawFlags&unix.IFF_RUNNING != 0 {
				withLink = append(withLink, l)
			}
		}
		if len(withLink) > 0 {
			l := slices.MinFunc(withLink, func(a, b netlink.Link) int { return strings.Compare(a.Attrs().Name, b.Attrs().Name) })
			return &nic{Name: l.Attrs().Name, MAC: l.Attrs().HardwareAddr, link: l}, nil
		}
		select {
		case <-ctx.Done():
			if len(names) == 0 {
				return nil, errors.New("no network interface: no driver in the initrd knows this terminal's NIC")
			}
			return nil, fmt.Errorf("no network interface has a link after %v (%s): is the cable plugged in?", timeout, strings.Join(names, ", "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// configure asks DHCP for an address on n, sets it, the default route and /etc/resolv.conf, and
// keeps renewing the lease until ctx ends (a deploy can outlast a short lease).
func configure(ctx context.Context, log *slog.Logger, n *nic) (net.IP, error) {
	c, err := nclient4.New(n.Name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(8))
	if err != nil {
		return nil, fmt.Errorf("DHCP on %s: %w", n.Name, err)
	}
	lease, err := c.Request(ctx, dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("DHCP on %s: no lease: %w", n.Name, err)
	}
	st, err := leaseSettings(lease.ACK)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("DHCP on %s: %w", n.Name, err)
	}
	ip, mask, gw := st.IP, st.Mask, st.Router
	if err := netlink.AddrReplace(n.link, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: mask}}); err != nil {
		c.Close()
		return nil, fmt.Errorf("setting address %s on %s: %w", ip, n.Name, err)
	}
	if gw != nil {
		rt := &netlink.Route{LinkIndex: n.link.Attrs().Index, Gw: gw}
		if !(&net.IPNet{IP: ip.Mask(mask), Mask: mask}).Contains(gw) {
			rt.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := netlink.RouteReplace(rt); err != nil {
			log.Warn("no default route", "gateway", gw, "err", err)
		}
	}
	if len(st.DNS) > 0 {
		var b strings.Builder
		for _, d := range st.DNS {
			fmt.Fprintf(&b, "nameserver %s\n", d)
		}
		if err := os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644); err != nil {
			log.Warn("no resolv.conf", "err", err)
		}
	}
	ack := lease.ACK
	ones, _ := mask.Size()
	log.Info("network configured", "interface", n.Name, "address", fmt.Sprintf("%s/%d", ip, ones), "gateway", gw,
		"dhcp_server", ack.ServerIdentifier(), "lease", ack.IPAddressLeaseTime(0))
	go renew(ctx, log, c, lease)
	return ip, nil
}

// renew renews the lease at half its time, until ctx ends.
func renew(ctx context.Context, log *slog.Logger, c *nclient4.Client, lease *nclient4.Lease) {
	defer c.Close()
	for {
		wait := lease.ACK.IPAddressLeaseTime(time.Hour) / 2
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 30*time.Second)):
		}
		l, err := c.Renew(ctx, lease)
		if err != nil {
			log.Warn("DHCP lease not renewed; trying again", "err", err)
			lease.ACK.UpdateOption(dhcpv4.OptIPAddressLeaseTime(2 * time.Minute))
			continue
		}
		lease = l
	}
}

// leaseSet is what the in-memory OS takes from a DHCP answer, checked.
type leaseSet struct {
	IP     net.IP
	Mask   net.IPMask
	Router net.IP   // nil: none
	DNS    []net.IP // at most 3
}

// leaseSettings reads and checks a DHCP ACK: any machine on the segment can answer DHCP, so an
// answer that would put the terminal on no usable address is refused, and what is odd but
// harmless (a router that is not unicast, too many DNS servers) is dropped.
func leaseSettings(ack *dhcpv4.DHCPv4) (leaseSet, error) {
	var st leaseSet
	ip := ack.YourIPAddr.To4()
	if !usableIPv4(ip) {
		return st, fmt.Errorf("the DHCP answer offers %v, which is not a usable IPv4 address", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ip.DefaultMask()
	}
	ones, bits := mask.Size()
	if bits != 32 || ones < 1 || ones > 31 {
		return st, fmt.Errorf("the DHCP answer's subnet mask %v is not a usable IPv4 netmask", net.IP(mask))
	}
	st.IP, st.Mask = ip, mask
	if r := ack.Router(); len(r) > 0 && usableIPv4(r[0].To4()) && !r[0].Equal(ip) {
		st.Router = r[0].To4()
	}
	for _, d := range ack.DNS() {
		if len(st.DNS) < 3 && usableIPv4(d.To4()) {
			st.DNS = append(st.DNS, d.To4())
		}
	}
	return st, nil
}

func usableIPv4(ip net.IP) bool {
	return ip != nil && len(ip) == net.IPv4len && !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsMulticast() &&
		!ip.Equal(net.IPv4bcast) && !ip.IsLinkLocalMulticast()
}
