package bootsvc

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"tms/state"
)

// MagicPacket is the Wake-on-LAN payload for mac: six 0xff bytes, then the MAC sixteen times.
func MagicPacket(mac net.HardwareAddr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("Wake-on-LAN needs a 6-byte Ethernet MAC, not %q", mac.String())
	}
	p := make([]byte, 0, 102)
	for range 6 {
		p = append(p, 0xff)
	}
	for range 16 {
		p = append(p, mac...)
	}
	return p, nil
}

// Waker sends Wake-on-LAN magic packets onto the terminals' segment.
type Waker struct {
	// Interface is the terminals' network interface; the packet is broadcast on it only.
	Interface string
	// Target is where packets go (default 255.255.255.255:9, the segment's broadcast).
	Target netip.AddrPort
}

// Wake sends a magic packet for mac (a terminal's MAC in any common notation) three times, as
// NICs in deep sleep can miss one.
func (w *Waker) Wake(ctx context.Context, mac string) error {
	norm, err := state.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	hw, _ := net.ParseMAC(norm)
	p, err := MagicPacket(hw)
	if err != nil {
		return err
	}
	target := w.Target
	if !target.IsValid() {
		target = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), 9)
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			if serr == nil && w.Interface != "" {
				serr = unix.BindToDevice(int(fd), w.Interface)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		return fmt.Errorf("Wake-on-LAN on %s: %w", ifaceName(w.Interface), err)
	}
	defer conn.Close()
	dst := net.UDPAddrFromAddrPort(target)
	for range 3 {
		if _, err := conn.WriteTo(p, dst); err != nil {
			return fmt.Errorf("Wake-on-LAN to %s via %s: %w", norm, ifaceName(w.Interface), err)
		}
	}
	return nil
}

func ifaceName(s string) string {
	if s == "" {
		return "the default interface"
	}
	return strconv.Quote(s)
}
