package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"tms/activities"
	"tms/bootsvc"
	"tms/config"
	"tms/internal/pgtest"
	"tms/server"
	"tms/settings"
	"tms/signing"
	"tms/state"
)

// askProxy sends a PXE DISCOVER of mac to a proxyDHCP port on loopback and reports whether an
// offer came back within wait.
func askProxy(t *testing.T, port int, mac net.HardwareAddr, wait time.Duration) bool {
	t.Helper()
	req, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		c.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			continue
		}
		if offer, err := dhcpv4.FromBytes(buf[:n]); err == nil && offer.TransactionID == req.TransactionID {
			return true
		}
	}
	return false
}

// TestSeveralServersInOneRegion starts two real region servers with the same region id on one
// inventory database: both join the registry, a second process with a taken server id is
// refused, central's push through one reaches the other within a heartbeat, each answers the
// network boot of the terminals chosen for it and only those, and when one stops, the other
// answers its terminals once it is stale.
func TestSeveralServersInOneRegion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Temporal server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := temporalClient(t)
	// One inventory for both servers: a SQLite file, or PostgreSQL with TMS_TEST_DATABASE=postgres.
	shared := pgtest.StateOr(t, filepath.Join(t.TempDir(), "inventory.db"))
	ipxe := t.TempDir()
	os.WriteFile(filepath.Join(ipxe, "undionly.kpxe"), []byte("iPXE"), 0o644)
	const beat = 200 * time.Millisecond
	type started struct {
		r    *server.Region
		dhcp int
	}
	start := func(id string, labels map[string]string) (started, error) {
		dhcp := freeUDPPort(t)
		r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-multi", DataDir: t.TempDir(), Database: shared,
			CentralKey: key.Public(), Client: c, NoRegister: true, ServerID: id, ServerLabels: labels, Heartbeat: beat, Version: "v-test",
			Boot: config.Boot{Enabled: true, Address: "127.0.0.1", DHCP: "proxy", TFTPDir: ipxe},
			BootPorts: &bootsvc.ServiceOptions{DHCPPort: dhcp, ProxyPort: freeUDPPort(t), TFTPPort: freeUDPPort(t),
				ListenIP: netip.MustParseAddr("127.0.0.1")}})
		return started{r, dhcp}, err
	}
	a, err := start("srv-a", map[string]string{"room": "a"})
	if err != nil {
		t.Fatal(err)
	}
	stopA := func() { a.r.Stop(context.Background()) }
	defer func() { stopA() }()
	b, err := start("srv-b", map[string]string{"room": "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.r.Stop(context.Background())

	// A second process with srv-a's id is refused while srv-a is healthy.
	if dup, err := start("srv-a", nil); err == nil {
		dup.r.Stop(ctx)
		t.Fatal("a second server with id srv-a started")
	} else if !errors.Is(err, state.ErrServerTaken) || !strings.Contains(err.Error(), "srv-a") {
		t.Fatalf("second srv-a: %v, want ErrServerTaken naming srv-a", err)
	}

	// Both are in the registry, healthy, with what they run.
	servers, err := b.r.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 2 || servers[0].ID != "srv-a" || servers[1].ID != "srv-b" || servers[0].Labels["room"] != "a" ||
		servers[0].Endpoint != a.r.Endpoint() || servers[1].Version != "v-test" || servers[0].DHCP != "proxy" {
		t.Fatalf("registry = %+v, want srv-a and srv-b as started", servers)
	}

	// Terminals in room a and room b, through the shared inventory.
	inv := a.r.Inventory
	macA, macB := mustMAC("52:54:00:aa:00:01"), mustMAC("52:54:00:bb:00:01")
	for _, e := range []struct {
		mac   net.HardwareAddr
		name  string
		group string
	}{{macA, "pca", "room-a"}, {macB, "pcb", "room-b"}} {
		if err := inv.Enroll(ctx, e.mac.String(), e.name); err != nil {
			t.Fatal(err)
		}
		if err := inv.CreateGroup(ctx, e.group); err != nil {
			t.Fatal(err)
		}
		if err := inv.AddToGroup(ctx, e.group, e.name); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.SetGroupLabels(ctx, e.group, state.LabelChange{Set: map[string]string{"room": e.group[len(e.group)-1:]}}); err != nil {
			t.Fatal(err)
		}
	}
	// Within a heartbeat or two, each server answers its room's terminal and not the other's.
	time.Sleep(3 * beat)
	if !askProxy(t, a.dhcp, macA, 3*time.Second) || !askProxy(t, b.dhcp, macB, 3*time.Second) {
		t.Fatal("a server is silent to a terminal of its own room")
	}
	if askProxy(t, a.dhcp, macB, time.Second) || askProxy(t, b.dhcp, macA, time.Second) {
		t.Fatal("a server answered a terminal of the other room")
	}
	// Exactly one of them answers a PC no admin enrolled.
	unknown := mustMAC("52:54:00:cc:00:01")
	if a.r.View.Answer(unknown) == b.r.View.Answer(unknown) {
		t.Fatalf("an unknown PC: srv-a answers %v, srv-b %v; want exactly one", a.r.View.Answer(unknown), b.r.View.Answer(unknown))
	}

	// A push through srv-a (the ApplySetting activity) reaches srv-b within a heartbeat.
	changed := make(chan settings.Values, 4)
	b.r.Settings.OnChange(func(v settings.Values) { changed <- v })
	ra := &activities.Region{ID: "lab-multi", Inventory: a.r.Inventory, Settings: a.r.Settings}
	if _, err := ra.ApplySetting(ctx, activities.ApplySettingInput{Key: settings.KeyWakeTimeout, Value: "7m", By: "admin", Task: "config/lab-multi/1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-changed:
		if v.WakeTimeout != 7*time.Minute {
			t.Fatalf("srv-b applied wake_timeout %s, want 7m", v.WakeTimeout)
		}
	case <-time.After(5 * beat):
		t.Fatalf("srv-b did not apply the push through srv-a within %s", 5*beat)
	}
	if e, _ := b.r.Settings.Get(settings.KeyWakeTimeout); e.Source.Kind != settings.SourcePushed || e.Source.By != "admin" {
		t.Errorf("srv-b's wake_timeout source = %+v, want pushed by admin", e.Source)
	}

	// srv-a stops: stale after three heartbeats, then srv-b answers room a's terminal too.
	stopA()
	stopA = func() {}
	time.Sleep(state.StaleAfter(beat) + 2*beat)
	servers, err = b.r.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 2 || servers[0].Healthy(time.Now(), state.StaleAfter(beat)) || !servers[1].Healthy(time.Now(), state.StaleAfter(beat)) {
		t.Fatalf("after srv-a stopped: %+v, want srv-a kept but stale, srv-b healthy", servers)
	}
	if !askProxy(t, b.dhcp, macA, 3*time.Second) {
		t.Fatal("srv-b is silent to room a's terminal after srv-a went stale")
	}
	// The status report lists both servers, srv-a as stale.
	rb := &activities.Region{ID: "lab-multi", Inventory: b.r.Inventory, ServerStaleAfter: state.StaleAfter(beat)}
	st, err := rb.Status(ctx, activities.StatusInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Summary.Servers) != 2 || st.Summary.Servers[0].Healthy || !st.Summary.Servers[1].Healthy {
		t.Fatalf("status servers = %+v, want srv-a stale and srv-b healthy", st.Summary.Servers)
	}
	// A PC that kept srv-a's... here srv-b's script URL reaches srv-b whoever was chosen: HTTP
	// is never refused for the choice.
	resp, err := http.Get(b.r.Boot.Scripts.ScriptURL(macB))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "#!ipxe") {
		t.Fatalf("script from srv-b: %d %q", resp.StatusCode, body)
	}
}

// TestSecondFullDHCPServerRefused: a region's second server in full DHCP mode refuses to start
// while another healthy one runs full DHCP.
func TestSecondFullDHCPServerRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Temporal server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := temporalClient(t)
	// One inventory for both servers: a SQLite file, or PostgreSQL with TMS_TEST_DATABASE=postgres.
	shared := pgtest.StateOr(t, filepath.Join(t.TempDir(), "inventory.db"))
	ipxe := t.TempDir()
	start := func(id string) (*server.Region, error) {
		return server.StartRegion(ctx, server.RegionOptions{ID: "lab-full", DataDir: t.TempDir(), Database: shared,
			CentralKey: key.Public(), Client: c, NoRegister: true, ServerID: id, Heartbeat: 200 * time.Millisecond,
			Boot: config.Boot{Enabled: true, Address: "127.0.0.1", DHCP: "full", Pool: "127.0.0.100-127.0.0.120", Subnet: "127.0.0.0/24",
				TFTPDir: ipxe, DHCPAllow: []string{"*"}},
			BootPorts: &bootsvc.ServiceOptions{DHCPPort: freeUDPPort(t), ProxyPort: freeUDPPort(t), TFTPPort: freeUDPPort(t),
				ListenIP: netip.MustParseAddr("127.0.0.1")}})
	}
	a, err := start("srv-a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	if b, err := start("srv-b"); err == nil {
		b.Stop(ctx)
		t.Fatal("a second full-mode DHCP server started in the region")
	} else if !strings.Contains(err.Error(), "srv-a") || !strings.Contains(err.Error(), "region.boot.dhcp") {
		t.Fatalf("second full-mode server: %v; want an error naming srv-a and region.boot.dhcp", err)
	}
	// The refused server never joined the registry.
	if servers, err := a.Servers(ctx); err != nil || len(servers) != 1 || servers[0].ID != "srv-a" {
		t.Errorf("registry after the refusal: %+v, %v; want srv-a alone", servers, err)
	}
}
