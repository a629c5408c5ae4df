package tftpd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// testDir makes a Dir with fake allow-listed files (the real undionly.kpxe from Debian's ipxe
// package when it is installed) and a file that is not allow-listed. It returns the contents
// by name.
func testDir(t testing.TB) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	files := map[string][]byte{
		"undionly.kpxe": random(70_001),
		"ipxe.efi":      random(1 << 20),
		"snponly.efi":   random(512 * 3), // a multiple of the block size ends with an empty block
		"secret.txt":    []byte("not allow-listed\n"),
	}
	if real, err := os.ReadFile(filepath.Join(DefaultDir, "undionly.kpxe")); err == nil {
		files["undionly.kpxe"] = real
	} else {
		t.Logf("using a fake undionly.kpxe: %v", err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

// start runs srv on 127.0.0.1 until the test ends, then checks that Serve returned ctx.Err().
func start(t testing.TB, srv *Server) netip.AddrPort {
	t.Helper()
	if srv.Log == nil {
		srv.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if srv.Timeout == 0 {
		srv.Timeout = 300 * time.Millisecond
		srv.Retries = 2
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	enablePacketInfo(conn) // as ListenAndServe does
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	return len(p), nil
}

// fetch reads name with pin/tftp's client; blksize 0 means no option.
func fetch(addr netip.AddrPort, name string, blksize int) ([]byte, error) {
	c, err := tftp.NewClient(addr.String())
	if err != nil {
		return nil, err
	}
	c.SetTimeout(time.Second)
	c.SetRetries(3)
	if blksize != 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Opcodes and error codes (RFC 1350 section 5).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// request builds an RRQ or WRQ: opcode, name, 0, mode, 0, then option name/value pairs
// (RFC 2347).
func request(op uint16, name, mode string, opts ...string) []byte {
	p := binary.BigEndian.AppendUint16(nil, op)
	for _, s := range append([]string{name, mode}, opts...) {
		p = append(append(p, s...), 0)
	}
	return p
}

// exchange sends p to addr from a fresh socket on 127.0.0.1 and returns the first reply, or
// nil if none came within wait.
func exchange(t testing.TB, addr netip.AddrPort, p []byte, wait time.Duration) []byte {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDPAddrPort(p, addr); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 70000)
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		t.Fatal(err)
	}
	return buf[:n]
}

// errorPacket returns the code and message of an ERROR packet, ok false for anything else.
func errorPacket(p []byte) (code uint16, msg string, ok bool) {
	if len(p) < 5 || binary.BigEndian.Uint16(p) != opERROR || p[len(p)-1] != 0 {
		return 0, "", false
	}
	return binary.BigEndian.Uint16(p[2:]), string(p[4 : len(p)-1]), true
}

// listDir returns the names in dir, to show that nothing was created.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}
