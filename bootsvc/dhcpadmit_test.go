package bootsvc_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"tms/agentapi"
	"tms/bootsvc"
	"tms/config"
	"tms/state"
)

// TestServiceFullDHCPLeasesToEnrolledTerminals runs full-mode DHCP on loopback against a real
// inventory: an enrolled terminal and an allow-listed MAC get offers; a PC the region has only
// seen, and a MAC it never heard of, get none, and the PXE one is recorded as seen.
func TestServiceFullDHCPLeasesToEnrolledTerminals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv, err := state.OpenInventory(ctx, filepath.Join(dir, "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	os.WriteFile(filepath.Join(dir, "undionly.kpxe"), []byte("iPXE"), 0o644) // TFTP needs a file to serve
	dhcpPort, proxyPort, tftpPort := freePort(t), freePort(t), freePort(t)
	svc, err := bootsvc.StartService(ctx, bootsvc.ServiceOptions{
		Boot: config.Boot{Enabled: true, Address: "127.0.0.1", DHCP: "full", TFTPDir: dir,
			Pool: "127.0.0.100-127.0.0.120", Subnet: "127.0.0.0/24", LeaseTime: time.Hour,
			DHCPAllow: []string{"02:00:5e:*"}, DHCPUnknownPerMAC: 12, DHCPUnknownTotal: 20},
		Inventory: inv, Claims: &agentapi.Server{Inventory: inv}, Endpoint: "http://127.0.0.1:1", DataDir: dir,
		ListenIP: netip.MustParseAddr("127.0.0.1"), DHCPPort: dhcpPort, ProxyPort: proxyPort, TFTPPort: tftpPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	enrolled, seenOnly, allowed, stranger := "52:54:00:cc:00:01", "52:54:00:cc:00:02", "02:00:5e:00:00:09", "52:54:00:cc:00:03"
	inv.Enroll(ctx, enrolled, "pc1")
	inv.Seen(ctx, seenOnly, "", time.Now())

	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(mac string, tries int) *dhcpv4.DHCPv4 {
		hw, _ := net.ParseMAC(mac)
		req, err := dhcpv4.NewDiscovery(hw, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		for range tries {
			c.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dhcpPort})
			c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				continue
			}
			if offer, err := dhcpv4.FromBytes(buf[:n]); err == nil && offer.TransactionID == req.TransactionID {
				return offer
			}
		}
		return nil
	}
	if offer := ask(enrolled, 20); offer == nil || offer.YourIPAddr.IsUnspecified() {
		t.Fatalf("enrolled terminal: no lease offered: %v", offer)
	}
	if offer := ask(allowed, 4); offer == nil {
		t.Fatal("allow-listed MAC: no lease offered")
	}
	for _, mac := range []string{seenOnly, stranger} {
		if offer := ask(mac, 3); offer != nil {
			t.Fatalf("%s, not enrolled: offered\n%s", mac, offer.Summary())
		}
	}
	term, err := inv.Terminal(ctx, stranger)
	if err != nil || term.Enrolled {
		t.Fatalf("refused PXE client not recorded as seen: %+v, %v", term, err)
	}
}
