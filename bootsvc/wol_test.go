package bootsvc

import (
	"bytes"
	"context"
	"net"
	"net/netip"
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
