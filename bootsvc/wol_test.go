package bootsvc

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestWakeSendsMagicPackets(t *testing.T) {
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := &Waker{Target: netip.MustParseAddrPort(l.LocalAddr().String())}
	if err := w.Wake(context.Background(), "52-54-00-AA-BB-CC"); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat([]byte{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}, 16)...)
	buf := make([]byte, 200)
	for i := range 3 {
		l.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := l.ReadFrom(buf)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("packet %d: % x", i, buf[:n])
		}
	}
	if err := w.Wake(context.Background(), "not-a-mac"); err == nil {
		t.Fatal("a malformed MAC was accepted")
	}
	if _, err := MagicPacket(net.HardwareAddr{1, 2, 3}); err == nil {
		t.Fatal("a 3-byte MAC was accepted")
	}
}

func TestParseMagicPacket(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	good, _ := MagicPacket(mac)
	with := func(edit func([]byte) []byte) []byte { return edit(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		p    []byte
		want string // empty: parses to mac
	}{
		{"a packet as Waker sends it", good, ""},
		{"a packet with a SecureOn password", with(func(b []byte) []byte { return append(b, 1, 2, 3, 4, 5, 6) }), ""},
		{"a short packet", good[:50], "not 50"},
		{"an empty packet", nil, "not 0"},
		{"a packet with trailing junk", with(func(b []byte) []byte { return append(b, 1, 2) }), "not 104"},
		{"a bad sync stream", with(func(b []byte) []byte { b[3] = 0; return b }), "byte 3 is 0x0"},
		{"repetitions that differ", with(func(b []byte) []byte { b[6+6*5] ^= 1; return b }), "repetition 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMagicPacket(tc.p)
			if tc.want == "" {
				if err != nil || !bytes.Equal(got, mac) {
					t.Fatalf("%v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestServeMagicWakesOnWake sends Waker's packets to ServeMagic over loopback, with junk
// between them.
func TestServeMagicWakesOnWake(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	woken := make(chan string, 10)
	done := make(chan error, 1)
	go func() { done <- ServeMagic(ctx, pc, func(mac string) { woken <- mac }) }()
	junk, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	junk.Write([]byte("hello"))
	junk.Close()
	w := &Waker{Target: netip.MustParseAddrPort(pc.LocalAddr().String())}
	if err := w.Wake(ctx, "52-54-00-AA-BB-CC"); err != nil {
		t.Fatal(err)
	}
	select {
	case mac := <-woken:
		if mac != "52:54:00:aa:bb:cc" {
			t.Fatalf("woke %q", mac)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no wake")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// FuzzParseMagicPacket feeds arbitrary datagrams to the parser tms dev's magic-packet listener
// uses: it must never panic, and what it accepts must be a packet Waker would send.
func FuzzParseMagicPacket(f *testing.F) {
	good, _ := MagicPacket(net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc})
	f.Add(good)
	f.Add(good[:60])
	f.Add(append(append([]byte(nil), good...), 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, p []byte) {
		mac, err := ParseMagicPacket(p)
		if err != nil {
			return
		}
		want, _ := MagicPacket(mac)
		if !bytes.Equal(p[:len(want)], want) {
			t.Fatalf("accepted % x as a magic packet for %s", p, mac)
		}
	})
}
