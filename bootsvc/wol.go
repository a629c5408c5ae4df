package bootsvc

import (
	"bytes"
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

// Magic packets as ParseMagicPacket reads them: 6 bytes of 0xff, the MAC 16 times, and
// optionally a SecureOn password of 4 or 6 bytes.
const (
	magicLen    = 6 + 16*6
	MaxMagicLen = magicLen + 6
)

// ParseMagicPacket returns the MAC a Wake-on-LAN magic packet wakes. Anything else (a
// packet of the wrong length, a sync stream that is not six 0xff, MAC repetitions that differ)
// is refused with what is wrong.
func ParseMagicPacket(p []byte) (net.HardwareAddr, error) {
	switch len(p) {
	case magicLen, magicLen + 4, magicLen + 6:
	default:
		return nil, fmt.Errorf("a magic packet is %d bytes (or 4 or 6 more with a password), not %d", magicLen, len(p))
	}
	for i := range 6 {
		if p[i] != 0xff {
			return nil, fmt.Errorf("a magic packet starts with six 0xff bytes; byte %d is %#x", i, p[i])
		}
	}
	mac := net.HardwareAddr(append([]byte(nil), p[6:12]...))
	for i := 1; i < 16; i++ {
		if !bytes.Equal(p[6+6*i:12+6*i], mac) {
			return nil, fmt.Errorf("repetition %d of the MAC in the magic packet is %s, not %s", i+1, net.HardwareAddr(p[6+6*i:12+6*i]), mac)
		}
	}
	return mac, nil
}

// ServeMagic reads magic packets from pc until ctx ends or pc is closed, and calls wake with
// the MAC (normalized, as state.NormalizeMAC writes it) of each well-formed one; malformed
// packets are dropped. tms dev's simulated terminals wake this way.
func ServeMagic(ctx context.Context, pc net.PacketConn, wake func(mac string)) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, MaxMagicLen+1)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mac, err := ParseMagicPacket(buf[:n])
		if err != nil {
			continue
		}
		if norm, err := state.NormalizeMAC(mac.String()); err == nil {
			wake(norm)
		}
	}
}
