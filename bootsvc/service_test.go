package bootsvc_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/pin/tftp/v3"

	"tms/agentapi"
	"tms/bootsvc"
	"tms/config"
	"tms/state"
)

func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestServiceBootsATerminalWithATask runs the boot service on loopback: an iPXE client with a
// task gets its script URL by DHCP (no secret in it), the script boots the in-memory OS with a
// token for this boot, and TFTP serves iPXE.
func TestServiceBootsATerminalWithATask(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inv, err := state.OpenInventory(ctx, filepath.Join(dir, "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	ipxeDir := filepath.Join(dir, "ipxe")
	os.MkdirAll(ipxeDir, 0o755)
	kpxe := bytes.Repeat([]byte("undionly "), 20000)
	os.WriteFile(filepath.Join(ipxeDir, "undionly.kpxe"), kpxe, 0o644)

	mux := http.NewServeMux()
	web := httptest.NewServer(mux)
	defer web.Close()
	dhcpPort, proxyPort, tftpPort := freePort(t), freePort(t), freePort(t)
	svc, err := bootsvc.StartService(ctx, bootsvc.ServiceOptions{
		Boot:      config.Boot{Enabled: true, Address: "127.0.0.1", DHCP: "proxy", TFTPDir: ipxeDir},
		Inventory: inv, Claims: &agentapi.Server{Inventory: inv}, Endpoint: web.URL, DataDir: dir,
		ListenIP: netip.MustParseAddr("127.0.0.1"), DHCPPort: dhcpPort, ProxyPort: proxyPort, TFTPPort: tftpPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	svc.Routes(mux)

	mac := "52:54:00:bb:00:01"
	inv.Enroll(ctx, mac, "pc1")
	inv.StartTask(ctx, state.Task{ID: "capture/r/pc1/lab", MAC: mac, Kind: "capture", Image: "lab"}, time.Now())
	inv.SetBootAction(ctx, mac, state.BootAction{Action: "capture", Task: "capture/r/pc1/lab", Image: "lab", Expires: time.Now().Add(time.Hour)})

	// iPXE asks DHCP (proxy mode) and is given its script's URL.
	hw, _ := net.ParseMAC(mac)
	req, err := dhcpv4.NewDiscovery(hw, dhcpv4.WithUserClass("iPXE", false),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func() string {
		t.Helper()
		var offer *dhcpv4.DHCPv4
		for try := 0; offer == nil && try < 20; try++ {
			c.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dhcpPort})
			c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			buf := make([]byte, 1500)
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				continue
			}
			if offer, err = dhcpv4.FromBytes(buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
		if offer == nil {
			t.Fatal("no DHCP offer")
		}
		if u := offer.BootFileNameOption(); u != "" {
			return u
		}
		return offer.BootFileName
	}
	scriptURL := ask()
	// Finding: one forged DISCOVER after the terminal's own re-minted the secret in the URL and
	// sent the real terminal to its own disk. The URL now holds no secret: a forged DISCOVER
	// changes nothing the terminal gets.
	if forged := ask(); forged != scriptURL {
		t.Fatalf("a second DISCOVER for the same MAC got %q, the first %q", forged, scriptURL)
	}
	u, err := url.Parse(scriptURL)
	if err != nil || len(u.Query()) != 1 || u.Query().Get("mac") != mac || !strings.HasPrefix(scriptURL, web.URL+"/boot/ipxe?") {
		t.Fatalf("offer's boot file %q: want the script URL with the MAC and nothing else", scriptURL)
	}
	resp, err := http.Get(scriptURL)
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(script, []byte("tms.token=")) || !bytes.Contains(script, []byte("kernel "+web.URL+"/boot/vmlinuz")) {
		t.Fatalf("script:\n%s", script)
	}

	// iPXE itself comes by TFTP.
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
	if _, err := tc.Receive("../inventory.db", "octet"); err == nil {
		t.Fatal("TFTP served a file outside the allow-list")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
