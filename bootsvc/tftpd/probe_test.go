package tftpd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"tms/internal/logbuf"
)

// logBuffer collects log lines written from the server's goroutines.
type logBuffer struct{ logbuf.Buffer }

// waitFor waits until the log holds a line containing s.
func (l *logBuffer) waitFor(t *testing.T, s string) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for line := range strings.SplitSeq(l.String(), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
	}
	t.Fatalf("no log line with %q:\n%s", s, l.String())
	return ""
}

// firstReply sends p to addr from conn and returns the reply and the transfer's own address.
func firstReply(t *testing.T, conn *net.UDPConn, addr netip.AddrPort, p []byte) ([]byte, netip.AddrPort) {
	t.Helper()
	if _, err := conn.WriteToUDPAddrPort(p, addr); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2000)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], from
}

func errorPkt(code uint16, msg string) []byte {
	p := binary.BigEndian.AppendUint16(nil, opERROR)
	p = binary.BigEndian.AppendUint16(p, code)
	return append(append(p, msg...), 0)
}

// TestUEFISizeProbeIsNotAWarning plays UEFI PXE firmware: it asks for ipxe.efi with tsize,
// takes the size from the OACK and ends the transfer with an ERROR, as EDK2 does before it
// downloads the file. That is normal and logs at debug level; a client that ends a transfer
// after data has started still warns.
func TestUEFISizeProbeIsNotAWarning(t *testing.T) {
	dir, files := testDir(t)
	var logs logBuffer
	addr := start(t, &Server{Dir: dir, Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	oack, tid := firstReply(t, conn, addr, request(opRRQ, "ipxe.efi", "octet", "tsize", "0", "blksize", "1468"))
	if binary.BigEndian.Uint16(oack) != opOACK || !bytes.Contains(oack, fmt.Appendf(nil, "tsize\x00%d\x00", len(files["ipxe.efi"]))) {
		t.Fatalf("reply to the size probe %q, want an OACK with the size", oack)
	}
	if _, err := conn.WriteToUDPAddrPort(errorPkt(8, "User aborted the transfer"), tid); err != nil {
		t.Fatal(err)
	}
	line := logs.waitFor(t, "size probe")
	if !strings.Contains(line, "level=DEBUG") {
		t.Fatalf("size probe logged as %q", line)
	}

	// The firmware's real download that follows.
	if got, err := fetch(addr, "ipxe.efi", 1468); err != nil || !bytes.Equal(got, files["ipxe.efi"]) {
		t.Fatalf("download after the probe: %d bytes, %v", len(got), err)
	}
	logs.waitFor(t, "tftp: sent")
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a UEFI boot logged a warning:\n%s", logs.String())
	}

	// A client that gives up after the first block: a failed transfer, which warns.
	conn2, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	data, tid2 := firstReply(t, conn2, addr, request(opRRQ, "undionly.kpxe", "octet"))
	if binary.BigEndian.Uint16(data) != opDATA {
		t.Fatalf("reply %q, want DATA", data)
	}
	if _, err := conn2.WriteToUDPAddrPort(errorPkt(0, "disk full"), tid2); err != nil {
		t.Fatal(err)
	}
	if line := logs.waitFor(t, "read failed"); !strings.Contains(line, "level=WARN") || !strings.Contains(line, "name=undionly.kpxe") {
		t.Fatalf("failed transfer logged as %q", line)
	}
}

func TestSizeProbeClassification(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "udp", Err: errTimeout{}}
	for _, tc := range []struct {
		name  string
		n     int64
		err   error
		probe bool
	}{
		{"client ERROR after the OACK", 0, errors.New("sending block 0: code=8, error: User aborted the transfer"), true},
		{"client ERROR after data", 512, errors.New("sending block 1: code=0, error: disk full"), false},
		{"client silent after the OACK", 0, timeout, false},
		{"client silent after data", 1024, timeout, false},
		{"server shutting down", 0, context.Canceled, false},
		{"no error", 0, nil, false},
	} {
		if got := sizeProbe(tc.n, tc.err); got != tc.probe {
			t.Errorf("%s: sizeProbe = %v, want %v", tc.name, got, tc.probe)
		}
	}
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
