package dhcpd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"tms/metrics"
)

// freePort finds a UDP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// serve runs s on loopback until the test ends and reports Serve's result.
func serve(t *testing.T, cfg Config) (port, proxyPort int) {
	t.Helper()
	_, port, proxyPort = serveNew(t, cfg)
	return port, proxyPort
}

// serveNew is serve, and returns the server too.
func serveNew(t *testing.T, cfg Config) (_ *Server, port, proxyPort int) {
	t.Helper()
	cfg.ListenIP = netip.MustParseAddr("127.0.0.1")
	cfg.Port, cfg.ProxyPort = freePort(t), freePort(t)
	s := newServer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not stop after cancel")
		}
	})
	return s, cfg.Port, cfg.ProxyPort
}

// exchange sends req to port and waits for the answer with its xid,
// retrying like a client until the server is up.
func exchange(t *testing.T, c *net.UDPConn, port int, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	buf := make([]byte, 1500)
	for try := 0; try < 20; try++ {
		if _, err := c.WriteTo(req.ToBytes(), to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout (or refused while the server starts): send again
			}
			reply, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				t.Fatalf("server sent a malformed reply: %v", err)
			}
			if reply.TransactionID == req.TransactionID {
				return reply
			}
		}
	}
	t.Fatalf("no answer on port %d", port)
	return nil
}

func clientConn(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServeProxyOnLoopback(t *testing.T) {
	var r recorder
	port, proxyPort := serve(t, proxyConfig(&r))
	c := clientConn(t)

	offer := exchange(t, c, port, discover(t, mac(1), kinds[0].mods...))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.BootFileName != "undionly.kpxe" || !offer.YourIPAddr.IsUnspecified() {
		t.Fatalf("port 67 answer:\n%s", offer.Summary())
	}
	ack := exchange(t, c, proxyPort, request(t, mac(1), append(kinds[1].mods, dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 1)))...))
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "ipxe.efi" || !ack.YourIPAddr.IsUnspecified() {
		t.Fatalf("port 4011 answer:\n%s", ack.Summary())
	}

	// A non-PXE client gets nothing from a proxy.
	c.WriteTo(discover(t, mac(2)).ToBytes(), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := c.ReadFrom(make([]byte, 1500)); err == nil {
		t.Fatalf("proxy answered a non-PXE client with %d bytes", n)
	}
}

func TestServeAnswersAfterGarbage(t *testing.T) {
	var r recorder
	port, _ := serve(t, fullConfig(&r))
	c := clientConn(t)
	exchange(t, c, port, discover(t, mac(9))) // the server is up

	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	valid := discover(t, mac(1), kinds[1].mods...).ToBytes()
	garbage := [][]byte{
		{},
		{0xff},
		valid[:100],                      // truncated header
		valid[:240],                      // header and cookie, no options, no end
		append(valid[:240:240], 53, 200), // option longer than the packet
		make([]byte, 4000),               // zeros: bad cookie
	}
	flipped := append([]byte(nil), valid...)
	flipped[2] = 200 // hlen beyond 16
	garbage = append(garbage, flipped)
	for i := 0; i < 50; i++ {
		for _, g := range garbage {
			if _, err := c.WriteTo(g, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	req, err := dhcpv4.FromBytes(valid)
	if err != nil {
		t.Fatal(err)
	}
	offer := exchange(t, c, port, req)
	if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.BootFileName != "ipxe.efi" {
		t.Fatalf("answer after garbage:\n%s", offer.Summary())
	}
}

func TestServeProxyStaysSilentToMACsAnotherServerAnswers(t *testing.T) {
	var r recorder
	cfg := proxyConfig(&r)
	var asked []string
	var mu sync.Mutex
	cfg.Answer = func(m net.HardwareAddr) bool {
		mu.Lock()
		asked = append(asked, m.String())
		mu.Unlock()
		return !bytes.Equal(m, mac(2)) // another server of the region answers mac(2)
	}
	var meter countingMeter
	cfg.Meter = &meter
	s, port, _ := serveNew(t, cfg)
	c := clientConn(t)

	// mac(1) is answered: the server is up.
	if offer := exchange(t, c, port, discover(t, mac(1), kinds[0].mods...)); offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("mac(1):\n%s", offer.Summary())
	}
	// mac(2) gets nothing, however often it asks.
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	for range 5 {
		if _, err := c.WriteTo(discover(t, mac(2), kinds[0].mods...).ToBytes(), to); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _, err := c.ReadFrom(make([]byte, 1500)); err == nil {
		t.Fatalf("the server answered a MAC another server answers, %d bytes", n)
	}
	// mac(3) is answered again afterwards.
	if offer := exchange(t, c, port, discover(t, mac(3), kinds[1].mods...)); offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("mac(3):\n%s", offer.Summary())
	}
	if st := s.Stats(); st.OtherServer != 5 {
		t.Errorf("Stats().OtherServer = %d, want 5", st.OtherServer)
	}
	if got := meter.get(metrics.DHCPOtherServer); got != 5 {
		t.Errorf("meter %s = %d, want 5", metrics.DHCPOtherServer, got)
	}
	// Nothing else of mac(2)'s requests was looked at: it was not reported seen.
	r.mu.Lock()
	_, seen2 := r.seen[mac(2).String()]
	r.mu.Unlock()
	if seen2 {
		t.Errorf("mac(2) was reported seen: the hook must come before any other work")
	}
}

// countingMeter counts DHCP results.
type countingMeter struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countingMeter) DHCPRequest(result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[string]int{}
	}
	m.n[result]++
}

func (m *countingMeter) get(result string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[result]
}
