package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sync/errgroup"

	"tms/metrics"
)

// maxInFlight bounds the requests handled at once; a flood beyond it is
// dropped, as UDP would drop it anyway.
const maxInFlight = 64

// Serve answers on UDP port 67 and, in proxy mode, on the PXE boot server
// port 4011, until ctx ends; it then returns ctx.Err(). Sockets are bound to
// Config.Interface.
func (s *Server) Serve(ctx context.Context) error {
	ports := []int{s.cfg.Port}
	if s.cfg.Mode == ModeProxy {
		ports = append(ports, s.cfg.ProxyPort)
	}
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, port := range ports {
		la := &net.UDPAddr{IP: net.IP(s.cfg.ListenIP.AsSlice()), Port: port}
		c, err := server4.NewIPv4UDPConn(s.cfg.Interface, la)
		if err != nil {
			return fmt.Errorf("dhcp listen on %v (interface %q): %w", la, s.cfg.Interface, err)
		}
		conns = append(conns, c)
	}
	s.log.Info("dhcp serving", "mode", s.cfg.Mode, "interface", s.cfg.Interface, "server_ip", s.cfg.ServerIP, "ports", ports)

	sem := make(chan struct{}, maxInFlight)
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range conns {
		srv, err := server4.NewServer("", nil, s.handler(sem), server4.WithConn(c))
		if err != nil {
			return err
		}
		g.Go(func() error {
			err := srv.Serve()
			if gctx.Err() != nil {
				return gctx.Err()
			}
			return fmt.Errorf("dhcp on %v: %w", c.LocalAddr(), err)
		})
	}
	g.Go(func() error {
		// Refusals counted after the last line reach the log within
		// refusalLogEvery, even if no further request comes.
		t := time.NewTicker(refusalLogEvery)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				s.tally.flush(s.log, s.now())
			}
		}
	})
	g.Go(func() error {
		<-gctx.Done()
		for _, c := range conns {
			c.Close() // ends srv.Serve
		}
		return nil
	})
	err := g.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// handler adapts Handle to server4, which has already dropped what does not
// parse, and sends the reply to the peer: the relay, or the client's own
// address; a client without one (peer 0.0.0.0) gets a broadcast, which
// server4 has already put in peer.
func (s *Server) handler(sem chan struct{}) server4.Handler {
	return func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		default:
			// A flood: count it, and log it with the refusals, at
			// most once per refusalLogEvery.
			s.counts.overloaded.Add(1)
			if s.cfg.Meter != nil {
				s.cfg.Meter.DHCPRequest(metrics.DHCPOverloaded)
			}
			s.tally.note(s.log, s.now(), tallyOverloaded, nil, nil)
			return
		}
		// A bug must cost one answer, not the boot service of a region.
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("dhcp: panic handling a request", "peer", peer, "panic", r, "stack", string(debug.Stack()))
			}
		}()
		reply, err := s.Handle(req, sourceAddr(peer))
		if err != nil {
			s.log.Error("dhcp: request not answered", "peer", peer, "mac", req.ClientHWAddr.String(), "err", err)
			return
		}
		if reply == nil {
			return
		}
		if _, err := conn.WriteTo(reply.ToBytes(), peer); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("dhcp: send reply", "peer", peer, "err", err)
		}
	}
}

// sourceAddr is the IPv4 address a request came from; server4 hands the
// broadcast address in place of 0.0.0.0, which means none.
func sourceAddr(peer net.Addr) netip.Addr {
	u, ok := peer.(*net.UDPAddr)
	if !ok {
		return netip.Addr{}
	}
	a := u.AddrPort().Addr().Unmap()
	if !a.Is4() || a.IsUnspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}
	}
	return a
}
