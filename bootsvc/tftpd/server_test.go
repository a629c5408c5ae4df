package tftpd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestReadServesExactBytes(t *testing.T) {
	dir, files := testDir(t)
	type read struct {
		remote netip.AddrPort
		name   string
		n      int64
	}
	var mu sync.Mutex
	var reads []read
	addr := start(t, &Server{Dir: dir, OnRead: func(remote netip.AddrPort, name string, n int64) {
		mu.Lock()
		defer mu.Unlock()
		reads = append(reads, read{remote, name, n})
	}})
	for _, name := range []string{"undionly.kpxe", "/ipxe.efi", "snponly.efi"} {
		for _, blksize := range []int{0, 1468, 8192, 65464} {
			t.Run(name+"/blksize="+strconv.Itoa(blksize), func(t *testing.T) {
				got, err := fetch(addr, name, blksize)
				if err != nil {
					t.Fatal(err)
				}
				want := files[strings.TrimPrefix(name, "/")]
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes, want the %d bytes of the file", len(got), len(want))
				}
			})
		}
	}
	// The client is done when it sent the last ACK; OnRead runs once the server has it.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(reads)
		mu.Unlock()
		if n >= 12 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reads) != 12 {
		t.Fatalf("OnRead called %d times, want 12", len(reads))
	}
	// Each transfer ends on its own goroutine when its last ACK arrives: a big file's
	// OnRead may come after a later small one's, so compare counts, not order.
	count := map[string]int{}
	for _, r := range reads {
		if r.n != int64(len(files[r.name])) || r.remote.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("OnRead = %+v, want %d bytes to 127.0.0.1", r, len(files[r.name]))
		}
		count[r.name]++
	}
	for _, name := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
		if count[name] != 4 {
			t.Errorf("OnRead called %d times for %s, want 4", count[name], name)
		}
	}
}

// TestOptions checks the OACK: blksize as asked (loopback's MTU allows it), tsize with the
// real size, unknown options dropped (RFC 2347).
func TestOptions(t *testing.T) {
	dir, files := testDir(t)
	addr := start(t, &Server{Dir: dir})
	reply := exchange(t, addr, request(opRRQ, "ipxe.efi", "octet", "blksize", "1468", "tsize", "0", "windowsize", "8"), time.Second)
	if len(reply) < 2 || binary.BigEndian.Uint16(reply) != opOACK {
		t.Fatalf("reply %q, want OACK", reply)
	}
	got := strings.Split(string(reply[2:len(reply)-1]), "\x00")
	opts := map[string]string{}
	for i := 0; i+1 < len(got); i += 2 {
		opts[got[i]] = got[i+1]
	}
	want := map[string]string{"blksize": "1468", "tsize": strconv.Itoa(len(files["ipxe.efi"]))}
	if !maps(opts, want) {
		t.Errorf("OACK options %q, want %q", opts, want)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRefusals(t *testing.T) {
	dir, _ := testDir(t)
	addr := start(t, &Server{Dir: dir})
	tests := []struct {
		name, wantMsg string
	}{
		{"secret.txt", "file not found"},
		{"/etc/passwd", "file not found"},
		{"../../etc/passwd", `file not found: invalid file name: name contains ".."`},
		{"//etc/passwd", "file not found: invalid file name: absolute path"},
		{`..\secret.txt`, "file not found: invalid file name: name contains a backslash"},
		{"pxelinux/undionly.kpxe", "file not found"},
		{"undionly.kpxe\n", "file not found: invalid file name: name contains a control character"},
		{strings.Repeat("x", 400), "file not found: invalid file name: name is 400 bytes, more than 255"},
		{"", "file not found: invalid file name: empty name"},
		{"snponly-arm64.efi", "file not found"}, // allow-listed, not in Dir
	}
	for _, tt := range tests {
		reply := exchange(t, addr, request(opRRQ, tt.name, "octet"), 2*time.Second)
		code, msg, ok := errorPacket(reply)
		if !ok || code != 1 || msg != tt.wantMsg {
			t.Errorf("RRQ %.40q: reply %q, want ERROR 1 %q", tt.name, reply, tt.wantMsg)
		}
	}
}

func TestWriteRefused(t *testing.T) {
	dir, _ := testDir(t)
	before := listDir(t, dir)
	addr := start(t, &Server{Dir: dir})
	for _, name := range []string{"new.bin", "undionly.kpxe", "../escape"} {
		reply := exchange(t, addr, request(opWRQ, name, "octet", "blksize", "1468"), 2*time.Second)
		code, msg, ok := errorPacket(reply)
		if !ok || msg != "access violation: tms serves files read-only" {
			t.Errorf("WRQ %q: reply %q (code %d), want the read-only ERROR", name, reply, code)
		}
	}
	if after := listDir(t, dir); !slices.Equal(before, after) {
		t.Errorf("Dir changed: %q, then %q", before, after)
	}
}

// TestSymlinks: a symlink in Dir is served only if it ends at a regular file inside Dir, or at a
// file of its own name directly inside one of LinkDirs (Debian's ipxe.efi -> /boot/ipxe.efi).
func TestSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(outside, "passwd"), "root:x:0:0\n")
	write(filepath.Join(outside, "snponly.efi"), "snp from the link dir")
	write(filepath.Join(outside, "ipxe-arm64.efi"), "arm64 under another name")
	os.Mkdir(filepath.Join(dir, "build"), 0o755)
	write(filepath.Join(dir, "build", "ipxe.efi"), "ipxe inside dir")
	link(filepath.Join(outside, "passwd"), "undionly.kpxe")             // escapes: refused
	link("build/ipxe.efi", "ipxe.efi")                                  // inside Dir: served
	link(filepath.Join(outside, "snponly.efi"), "snponly.efi")          // LinkDirs, same name: served
	link(filepath.Join(outside, "ipxe-arm64.efi"), "snponly-arm64.efi") // LinkDirs, other name: refused
	os.Mkdir(filepath.Join(dir, "ipxe-arm64.efi"), 0o755)               // a directory: refused

	addr := start(t, &Server{Dir: dir, LinkDirs: []string{outside}})
	want := map[string]string{"ipxe.efi": "ipxe inside dir", "snponly.efi": "snp from the link dir"}
	for _, name := range DefaultFiles {
		got, err := fetch(addr, name, 0)
		if w, ok := want[name]; ok {
			if err != nil || string(got) != w {
				t.Errorf("%s: got %q, %v; want %q", name, got, err, w)
			}
		} else if err == nil || !strings.Contains(err.Error(), "file not found") {
			t.Errorf("%s: got %q, %v; want file not found", name, got, err)
		}
	}
}

func TestFIFOIsNotOpened(t *testing.T) {
	dir, _ := testDir(t)
	if err := syscall.Mkfifo(filepath.Join(dir, "ipxe-arm64.efi"), 0o644); err != nil {
		t.Skip("no FIFO:", err)
	}
	addr := start(t, &Server{Dir: dir}) // would hang in open if it tried to read the FIFO
	if _, err := fetch(addr, "ipxe-arm64.efi", 0); err == nil {
		t.Error("a FIFO was served")
	}
}

func TestServeFailsWithoutFiles(t *testing.T) {
	for name, srv := range map[string]*Server{
		"no dir":         {Dir: filepath.Join(t.TempDir(), "missing")},
		"nothing listed": {Dir: t.TempDir()},
		"bad allow-list": {Dir: t.TempDir(), Files: []string{"../etc/passwd"}},
	} {
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(t.Context(), conn); err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("%s: Serve = %v, want an error", name, err)
		}
	}
}

// TestMalformedPackets sends what a broken or hostile client might, then checks that the server
// still answers a valid read.
func TestMalformedPackets(t *testing.T) {
	dir, files := testDir(t)
	addr := start(t, &Server{Dir: dir})
	// want is the opcode of the reply; 0: dropped without a reply.
	packets := []struct {
		what string
		p    []byte
		want uint16
	}{
		{"empty", []byte{}, 0},
		{"one byte", []byte{0}, 0},
		{"garbage", []byte("\xde\xad\xbe\xef garbage \xff\xfe"), 0},
		{"unknown opcode", []byte{0, 9, 'x', 0, 'o', 'c', 't', 'e', 't', 0}, 0},
		{"opcode zero", []byte{0, 0, 0, 0}, 0},
		{"truncated RRQ", []byte{0, opRRQ, 'u'}, 0},
		{"RRQ without NULs", append([]byte{0, opRRQ}, "undionly.kpxe"...), 0},
		{"RRQ without mode", append([]byte{0, opRRQ}, "undionly.kpxe\x00"...), opDATA},
		{"stray DATA", []byte{0, opDATA, 0, 1, 'x'}, 0},
		{"stray ACK", []byte{0, opACK, 0, 1}, 0},
		{"stray ERROR", []byte{0, opERROR, 0, 1, 0}, 0},
		{"stray OACK", []byte{0, opOACK, 'a', 0, 'b', 0}, 0},
		{"huge blksize", request(opRRQ, "snponly.efi", "octet", "blksize", strings.Repeat("9", 400)), opDATA},
		{"negative blksize", request(opRRQ, "snponly.efi", "octet", "blksize", "-1"), opDATA},
		{"tiny blksize", request(opRRQ, "snponly.efi", "octet", "blksize", "8"), opDATA},
		{"huge tsize", request(opRRQ, "snponly.efi", "octet", "tsize", strings.Repeat("9", 300)), opOACK},
		{"odd options", request(opRRQ, "snponly.efi", "octet", "blksize"), opDATA},
		{"unknown mode", request(opRRQ, "snponly.efi", "mail"), opDATA},
		{"WRQ", request(opWRQ, "evil.bin", "octet"), opERROR},
		{"oversized datagram", append(request(opRRQ, "snponly.efi", "octet"), make([]byte, 65000)...), opDATA},
		{"huge name in option", request(opRRQ, "snponly.efi", "octet", strings.Repeat("o", 1000), "1"), opDATA},
	}
	for _, tt := range packets {
		reply := exchange(t, addr, tt.p, 300*time.Millisecond)
		var op uint16
		if len(reply) >= 2 {
			op = binary.BigEndian.Uint16(reply)
		}
		if op != tt.want {
			t.Errorf("%s: reply %.40q, want opcode %d", tt.what, reply, tt.want)
		}
	}
	got, err := fetch(addr, "ipxe.efi", 1468)
	if err != nil || !bytes.Equal(got, files["ipxe.efi"]) {
		t.Fatalf("valid read after malformed packets: %d bytes, %v", len(got), err)
	}
	if after := listDir(t, dir); slices.Contains(after, "evil.bin") {
		t.Error("WRQ created a file")
	}
}

// TestCancelStopsServe: a client that stops acknowledging does not keep Serve alive much
// longer than Timeout×Retries after the context ends.
func TestCancelStopsServe(t *testing.T) {
	dir, _ := testDir(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Dir: dir, Timeout: 200 * time.Millisecond, Retries: 2}
	go func() { done <- srv.Serve(ctx, conn) }()
	if reply := exchange(t, addr, request(opRRQ, "ipxe.efi", "octet"), time.Second); len(reply) < 4 || binary.BigEndian.Uint16(reply) != opDATA {
		t.Fatalf("reply %.20q, want DATA", reply)
	}
	// The transfer is now waiting for an ACK that never comes.
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v, want context.Canceled", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve still running 3s after cancel")
	}
	if reply := exchange(t, addr, request(opRRQ, "ipxe.efi", "octet"), 300*time.Millisecond); reply != nil {
		t.Errorf("answered after Serve returned: %.20q", reply)
	}
}

// TestDebianPackage serves Debian's ipxe package as installed, with the zero Server: its
// ipxe.efi is a symlink to /boot/ipxe.efi, which DefaultLinkDirs lets through.
func TestDebianPackage(t *testing.T) {
	if _, err := os.Stat(filepath.Join(DefaultDir, "undionly.kpxe")); err != nil {
		t.Skipf("Debian package ipxe not installed: %v", err)
	}
	addr := start(t, &Server{})
	for _, name := range DefaultFiles {
		want, wantErr := os.ReadFile(filepath.Join(DefaultDir, name))
		got, err := fetch(addr, name, 1468)
		switch {
		case wantErr != nil && err == nil:
			t.Errorf("%s: served although %v", name, wantErr)
		case wantErr == nil && (err != nil || !bytes.Equal(got, want)):
			t.Errorf("%s: got %d bytes, %v; want the package's %d bytes", name, len(got), err, len(want))
		}
	}
}

// TestLinkDirsOnlyByDefault: /boot is trusted for the default Dir only; a Dir set by the admin
// trusts no outside directory unless LinkDirs says so.
func TestLinkDirsOnlyByDefault(t *testing.T) {
	target := filepath.Join(DefaultLinkDirs[0], "ipxe.efi")
	if _, err := os.Stat(target); err != nil {
		t.Skipf("no %s to link to: %v", target, err)
	}
	dir, _ := testDir(t)
	os.Remove(filepath.Join(dir, "ipxe.efi"))
	if err := os.Symlink(target, filepath.Join(dir, "ipxe.efi")); err != nil {
		t.Fatal(err)
	}
	addr := start(t, &Server{Dir: dir})
	if got, err := fetch(addr, "ipxe.efi", 0); err == nil {
		t.Errorf("served %d bytes through a symlink to %s", len(got), target)
	}
}
