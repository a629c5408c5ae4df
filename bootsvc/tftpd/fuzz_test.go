package tftpd

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3/netascii"
)

// sink is an io.ReaderFrom standing in for pin/tftp's sender.
type sink struct {
	bytes.Buffer
	size int64
}

func (s *sink) SetSize(n int64)                     { s.size = n }
func (s *sink) RemoteAddr() net.UDPAddr             { return net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2000} }
func (s *sink) ReadFrom(r io.Reader) (int64, error) { return s.Buffer.ReadFrom(r) }

// FuzzRead: whatever name a client requests, the read handler either refuses with a
// "file not found" message and sends nothing, or sends exactly the allow-listed file that
// CleanName names.
func FuzzRead(f *testing.F) {
	files := map[string][]byte{"undionly.kpxe": []byte("bios"), "ipxe.efi": []byte("uefi")}
	h := &handler{ctx: f.Context(), log: slog.New(slog.DiscardHandler), files: files, allowed: DefaultFiles}
	for _, s := range []string{"undionly.kpxe", "/ipxe.efi", "snponly.efi", "../ipxe.efi", "/etc/passwd", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		var out sink
		err := h.read(name, &out)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "file not found") || out.Len() != 0 {
				t.Fatalf("read(%q): %v after %d bytes", name, err, out.Len())
			}
			return
		}
		clean, cerr := CleanName(name)
		if cerr != nil || !bytes.Equal(out.Bytes(), files[clean]) || out.size != int64(len(files[clean])) {
			t.Fatalf("read(%q) sent %q (tsize %d); CleanName = %q, %v", name, out.Bytes(), out.size, clean, cerr)
		}
	})
}

// FuzzPacket sends each input as a datagram to a running server on 127.0.0.1. Whatever it is,
// a reply carries data only for a read request whose name CleanName accepts, and that data is
// the start of that file. The server must keep answering a valid read afterwards.
func FuzzPacket(f *testing.F) {
	dir, files := testDir(f)
	// The fuzz target may not log through f; the server logs nowhere.
	addr := start(f, &Server{Dir: dir, Timeout: 100 * time.Millisecond, Retries: 1, Log: slog.New(slog.DiscardHandler)})
	for _, p := range [][]byte{
		request(opRRQ, "undionly.kpxe", "octet"),
		request(opRRQ, "/ipxe.efi", "octet", "blksize", "1468", "tsize", "0"),
		request(opRRQ, "secret.txt", "octet"),
		request(opRRQ, "../secret.txt", "netascii"),
		request(opWRQ, "undionly.kpxe", "octet"),
		request(opRRQ, "snponly.efi", "octet", "blksize", "99999999999"),
		{0, opACK, 0, 1},
		{0, 7, 0},
		{},
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		reply := exchange(t, addr, p, 30*time.Millisecond)
		defer func() {
			if got, err := fetch(addr, "snponly.efi", 0); err != nil || !bytes.Equal(got, files["snponly.efi"]) {
				t.Fatalf("valid read after %q: %d bytes, %v", p, len(got), err)
			}
		}()
		if len(reply) < 2 {
			return
		}
		switch binary.BigEndian.Uint16(reply) {
		case opERROR:
			return
		case opDATA, opOACK:
		default:
			t.Fatalf("packet %q: unexpected reply %.40q", p, reply)
		}
		// pin/tftp reads requests into a 516-byte buffer; the name ends at the first NUL.
		req := p[:min(len(p), 516)]
		if len(req) < 2 || binary.BigEndian.Uint16(req) != opRRQ {
			t.Fatalf("packet %q is no RRQ but got %.40q", p, reply)
		}
		name, _, _ := bytes.Cut(req[2:], []byte{0})
		clean, err := CleanName(string(name))
		if err != nil {
			t.Fatalf("RRQ for %q (%v) got %.40q", name, err, reply)
		}
		want := files[clean]
		if mode, _, _ := bytes.Cut(req[2+len(name)+1:], []byte{0}); string(mode) == "netascii" {
			want, _ = io.ReadAll(netascii.ToReader(bytes.NewReader(want)))
		}
		if binary.BigEndian.Uint16(reply) == opDATA && !bytes.HasPrefix(want, reply[4:]) {
			t.Fatalf("RRQ for %q: DATA is not the start of %s", name, clean)
		}
	})
}
