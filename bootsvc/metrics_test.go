package bootsvc_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/pin/tftp/v3"

	"tms/agentapi"
	"tms/bootsvc"
	"tms/config"
	"tms/internal/promtest"
	"tms/metrics"
	"tms/state"
)

// TestServiceCountsDHCPAndTFTPRequests runs the boot service in full DHCP mode on loopback with
// the region's metrics: an enrolled terminal's DISCOVER counts as answered, a stranger's as
// not_admitted, a packet that is not a BOOTREQUEST as malformed; a TFTP read of iPXE counts as
// answered, one outside the allow-list as not_allowed, a write as write_denied.
func TestServiceCountsDHCPAndTFTPRequests(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv, err := state.OpenInventory(ctx, filepath.Join(dir, "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	kpxe := bytes.Repeat([]byte("iPXE"), 1000)
	os.WriteFile(filepath.Join(dir, "undionly.kpxe"), kpxe, 0o644)
	m := metrics.NewRegion(metrics.RegionSources{})
	dhcpPort, proxyPort, tftpPort := freePort(t), freePort(t), freePort(t)
	svc, err := bootsvc.StartService(ctx, bootsvc.ServiceOptions{
		Boot: config.Boot{Enabled: true, Address: "127.0.0.1", DHCP: "full", TFTPDir: dir,
			Pool: "127.0.0.100-127.0.0.120", Subnet: "127.0.0.0/24", LeaseTime: time.Hour, DHCPUnknownPerMAC: 12, DHCPUnknownTotal: 20},
		Inventory: inv, Claims: &agentapi.Server{Inventory: inv}, Endpoint: "http://127.0.0.1:1", DataDir: dir,
		ListenIP: netip.MustParseAddr("127.0.0.1"), DHCPPort: dhcpPort, ProxyPort: proxyPort, TFTPPort: tftpPort, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	enrolled, stranger := "52:54:00:dd:00:01", "52:54:00:dd:00:02"
	inv.Enroll(ctx, enrolled, "pc1")

	value := func(name string, labels ...string) float64 {
		return promtest.Value(promtest.Gather(t, m.Registry()), name, labels...)
	}
	// waitFor polls: the servers count after they answer, the client may read the answer first.
	waitFor := func(name, result string, want float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for value(name, "result", result) < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := value(name, "result", result); got != want {
			t.Errorf("%s{result=%q} = %v, want %v", name, result, got, want)
		}
	}

	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dhcpAddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dhcpPort}
	discover := func(mac string) *dhcpv4.DHCPv4 {
		hw, _ := net.ParseMAC(mac)
		req, err := dhcpv4.NewDiscovery(hw, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	// The enrolled terminal: until it has an offer (the first packets may race the socket).
	req := discover(enrolled)
	buf := make([]byte, 1500)
	offered := false
	for range 20 {
		c.WriteTo(req.ToBytes(), dhcpAddr)
		c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		if n, _, err := c.ReadFrom(buf); err == nil {
			if o, err := dhcpv4.FromBytes(buf[:n]); err == nil && o.TransactionID == req.TransactionID {
				offered = true
				break
			}
		}
	}
	if !offered {
		t.Fatal("enrolled terminal: no offer")
	}
	answered := value("tms_dhcp_requests_total", "result", metrics.DHCPAnswered)
	if answered < 1 {
		t.Fatalf("an offer went out, answered = %v", answered)
	}
	c.WriteTo(discover(stranger).ToBytes(), dhcpAddr)
	waitFor("tms_dhcp_requests_total", metrics.DHCPNotAdmitted, 1)
	reply := discover(enrolled)
	reply.OpCode = dhcpv4.OpcodeBootReply // a server's answer sent to the server: not a request
	c.WriteTo(reply.ToBytes(), dhcpAddr)
	waitFor("tms_dhcp_requests_total", metrics.DHCPMalformed, 1)
	if got := value("tms_dhcp_requests_total", "result", metrics.DHCPAnswered); got != answered {
		t.Errorf("refused requests counted as answered: %v, then %v", answered, got)
	}

	tc, err := tftp.NewClient(net.JoinHostPort("127.0.0.1", itoa(tftpPort)))
	if err != nil {
		t.Fatal(err)
	}
	wt, err := tc.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), kpxe) {
		t.Fatalf("TFTP: %d bytes, %v", got.Len(), err)
	}
	waitFor("tms_tftp_requests_total", metrics.TFTPAnswered, 1)
	if _, err := tc.Receive("../inventory.db", "octet"); err == nil {
		t.Fatal("TFTP served a file outside the allow-list")
	}
	waitFor("tms_tftp_requests_total", metrics.TFTPNotAllowed, 1)
	if rf, err := tc.Send("undionly.kpxe", "octet"); err == nil {
		rf.ReadFrom(bytes.NewReader([]byte("evil")))
	}
	waitFor("tms_tftp_requests_total", metrics.TFTPWriteDenied, 1)
}
