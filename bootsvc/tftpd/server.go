package tftpd

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/pin/tftp/v3"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"tms/metrics"
)

const (
	// DefaultDir is where Debian's ipxe package installs its binaries.
	DefaultDir = "/usr/lib/ipxe"
	// DefaultTimeout is how long the server waits for a client's ACK before sending again.
	// Firmware on a classroom LAN answers in milliseconds; two seconds covers a busy switch.
	DefaultTimeout = 2 * time.Second
	// DefaultRetries is how many times a block is sent before the transfer is given up.
	DefaultRetries = 5
	// MaxFileSize bounds what Serve reads into memory per file. iPXE binaries are well under
	// 2 MiB; TFTP's 16-bit block numbers wrap at 32 MiB with 512-byte blocks anyway.
	MaxFileSize = 32 << 20
)

// DefaultLinkDirs are the directories, besides Dir, that symlinks in the default Dir may point
// into: Debian's /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi.
var DefaultLinkDirs = []string{"/boot"}

// Messages of the TFTP error packets the server sends. pin/tftp v3.1.0 sends every error with
// code 1 (file not found); the message says the real reason.
var (
	errNotFound = errors.New("file not found")
	errReadOnly = errors.New("access violation: tms serves files read-only")
)

// Server serves the allow-listed iPXE binaries read-only over TFTP (RFC 1350, with the
// blksize (RFC 2348) and tsize (RFC 2349) options). The zero value serves DefaultFiles from
// DefaultDir.
type Server struct {
	// Dir holds the files; DefaultDir if empty.
	Dir string
	// Files is the allow-list of plain file names; DefaultFiles if nil.
	Files []string
	// LinkDirs are directories outside Dir that a symlink in Dir may point into, and then only
	// to a regular file with the link's own name. DefaultLinkDirs if nil and Dir is empty;
	// none if nil and Dir is set.
	LinkDirs []string
	// Timeout and Retries: see DefaultTimeout and DefaultRetries (used when zero).
	Timeout time.Duration
	Retries int
	// Log receives one line per request; discarded if nil.
	Log *slog.Logger
	// OnRead, if not nil, is called after a file was sent completely.
	OnRead func(remote netip.AddrPort, name string, bytes int64)
	// Meter, if not nil, counts requests by result (metrics.TFTP*): the region's metrics.
	Meter Meter
}

// Meter counts TFTP requests by result (package metrics's Region).
type Meter interface {
	TFTPRequest(result string)
}

// ListenAndServe listens on the UDP address addr (":69" if empty) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if addr == "" {
		addr = ":69"
	}
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("tftpd: %w", err)
	}
	enablePacketInfo(conn) // before the first request can arrive
	return s.Serve(ctx, conn)
}

// Serve reads the allow-listed files from Dir into memory, then answers requests on conn until
// ctx ends. Then it closes conn, aborts each transfer in progress at its next block (a client
// that stopped answering holds it up to Timeout×Retries) and returns ctx.Err(). Serve owns
// conn; pass a *net.UDPConn so that blksize can follow the interface MTU.
//
// Files are read once, at start: what can leave is fixed and logged before the first request,
// a broken Dir shows up when the region starts rather than when a class boots, and a transfer
// holds no file descriptor. After upgrading the ipxe package, restart the region.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	enablePacketInfo(conn)
	files, err := s.load(log)
	if err != nil {
		conn.Close()
		return err
	}
	h := &handler{ctx: ctx, log: log, files: files, allowed: s.files(), onRead: s.OnRead, meter: s.Meter}

	ts := tftp.NewServer(h.read, h.write)
	ts.SetTimeout(cmp.Or(s.Timeout, DefaultTimeout))
	ts.SetRetries(cmp.Or(s.Retries, DefaultRetries))
	// The timeout already waited for the ACK; resend at once instead of pin/tftp's random
	// sleep of up to a second.
	ts.SetBackoff(func(int) time.Duration { return 0 })
	ts.SetHook(h)

	log.Info("tftp: serving", "addr", conn.LocalAddr().String(), "dir", s.dir(), "files", len(files))
	done := make(chan error, 1)
	go func() { done <- ts.Serve(conn) }()
	select {
	case <-ctx.Done():
		ts.Shutdown()
		<-done
		conn.Close() // Shutdown does not close conn if it ran before Serve stored it
		return ctx.Err()
	case err := <-done:
		ts.Shutdown()
		conn.Close()
		if err == nil {
			err = errors.New("stopped although its context did not end")
		}
		return fmt.Errorf("tftpd: %w", err)
	}
}

// enablePacketInfo asks for the destination address and interface of each datagram, from which
// pin/tftp derives the largest blksize (interface MTU). pin/tftp asks too, but only once
// Serve runs: a request that arrived before gets no interface and 512-byte blocks.
func enablePacketInfo(conn net.PacketConn) {
	c, ok := conn.(*net.UDPConn)
	if !ok {
		return
	}
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		_ = ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	} else {
		_ = ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	}
}

func (s *Server) dir() string { return cmp.Or(s.Dir, DefaultDir) }

func (s *Server) files() []string {
	if s.Files == nil {
		return DefaultFiles
	}
	return s.Files
}

func (s *Server) linkDirs() []string {
	if s.LinkDirs == nil && s.Dir == "" {
		return DefaultLinkDirs
	}
	return s.LinkDirs
}

// load reads every allow-listed file present in Dir. A name that is missing, not a regular
// file, or a symlink leaving Dir other than into LinkDirs under its own name is left out (and
// then refused like an unknown name); load fails only if nothing at all can be served.
func (s *Server) load(log *slog.Logger) (map[string][]byte, error) {
	dir := s.dir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("tftpd: %w", err)
	}
	defer root.Close()
	files := make(map[string][]byte)
	for _, name := range s.files() {
		if err := validFileName(name); err != nil {
			return nil, fmt.Errorf("tftpd: %w", err)
		}
		data, err := readRegular(root, name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && isSymlink(root, name) {
			// os.Root refuses symlinks that leave dir; Debian's ipxe.efi is one.
			data, err = s.readLinked(dir, name)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			log.Info("tftp: allow-listed file not present", "dir", dir, "name", name)
		case err != nil:
			log.Error("tftp: allow-listed file refused", "dir", dir, "name", name, "err", err)
		default:
			files[name] = data
			log.Debug("tftp: loaded", "name", name, "bytes", len(data))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("tftpd: none of %q can be served from %s", s.files(), dir)
	}
	return files, nil
}

func isSymlink(root *os.Root, name string) bool {
	st, err := root.Lstat(name)
	return err == nil && st.Mode()&fs.ModeSymlink != 0
}

// readLinked follows the symlink dir/name if it ends at a regular file with the same name
// directly inside one of LinkDirs, and reads it through that directory's os.Root.
func (s *Server) readLinked(dir, name string) ([]byte, error) {
	target, err := filepath.EvalSymlinks(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	for _, ld := range s.linkDirs() {
		ld, err := filepath.EvalSymlinks(ld)
		if err != nil || filepath.Dir(target) != ld || filepath.Base(target) != name {
			continue
		}
		root, err := os.OpenRoot(ld)
		if err != nil {
			return nil, err
		}
		defer root.Close()
		return readRegular(root, name)
	}
	return nil, fmt.Errorf("symlink to %s, outside %s and %q", target, dir, s.linkDirs())
}

// readRegular reads name from root if it is a regular file of at most MaxFileSize bytes.
// Symlinks are followed only inside root.
func readRegular(root *os.Root, name string) ([]byte, error) {
	st, err := root.Stat(name) // before Open: opening a FIFO would block
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", name, st.Mode().Type())
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fst, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(st, fst) {
		return nil, fmt.Errorf("%s: changed while opening", name)
	}
	if fst.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", name, fst.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: more than %d bytes", name, MaxFileSize)
	}
	return data, nil
}

// handler answers the requests of one Serve call.
type handler struct {
	ctx     context.Context
	log     *slog.Logger
	files   map[string][]byte
	allowed []string
	onRead  func(netip.AddrPort, string, int64)
	meter   Meter
}

func (h *handler) count(result string) {
	if h.meter != nil {
		h.meter.TFTPRequest(result)
	}
}

var _ tftp.Hook = (*handler)(nil)

// read answers a read request (RRQ). An error it returns goes to the client as the message of
// an ERROR packet.
func (h *handler) read(filename string, rf io.ReaderFrom) error {
	remote := remoteOf(rf)
	log := h.log.With("remote", remote.String(), "name", logName(filename))
	name, err := cleanName(filename, h.allowed)
	switch {
	case errors.Is(err, ErrNotAllowed):
		h.count(metrics.TFTPNotAllowed)
		log.Warn("tftp: refused read", "err", err)
		return errNotFound
	case err != nil:
		h.count(metrics.TFTPNotAllowed)
		log.Warn("tftp: refused read", "err", err)
		return fmt.Errorf("%w: %w", errNotFound, err)
	}
	data, ok := h.files[name]
	if !ok {
		h.count(metrics.TFTPNotFound)
		log.Warn("tftp: refused read", "err", "allow-listed but not present in the directory")
		return errNotFound
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(int64(len(data))) // answers the tsize option
	}
	start := time.Now()
	n, err := rf.ReadFrom(&ctxReader{ctx: h.ctx, r: bytes.NewReader(data)})
	if err != nil {
		if sizeProbe(n, err) {
			h.count(metrics.TFTPProbe)
			log.Debug("tftp: size probe ended by the client", "err", err)
			return err
		}
		h.count(metrics.TFTPFailed)
		log.Warn("tftp: read failed", "bytes", n, "err", err)
		return err
	}
	h.count(metrics.TFTPAnswered)
	log.Info("tftp: sent", "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
	if h.onRead != nil {
		h.onRead(remote, name, n)
	}
	return nil
}

// sizeProbe tells a transfer that the client ended on purpose from one that failed. UEFI PXE
// firmware asks for a file's size first: an RRQ with the tsize option, which the server
// answers with an OACK, and then the client ends the transfer with an ERROR packet, before
// any data, and asks again for the file itself. pin/tftp reports that ERROR as a plain error
// with nothing sent (n is 0: every allow-listed file has data, so a transfer that got as far
// as block 1 has n > 0). A client that stopped answering is a net.Error (timeout), and the
// server's shutdown is the context's error: both are failures.
func sizeProbe(n int64, err error) bool {
	var ne net.Error
	return n == 0 && err != nil && !errors.As(err, &ne) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// write refuses every write request (WRQ).
func (h *handler) write(filename string, wt io.WriterTo) error {
	h.count(metrics.TFTPWriteDenied)
	h.log.Warn("tftp: refused write", "remote", remoteOf(wt).String(), "name", logName(filename))
	return errReadOnly
}

// OnSuccess implements tftp.Hook; read logs transfers itself.
func (h *handler) OnSuccess(tftp.TransferStats) {}

// OnFailure implements tftp.Hook. Failures of transfers are logged by read; what is left are
// packets that pin/tftp dropped before any handler ran (garbage, unknown opcodes).
func (h *handler) OnFailure(stats tftp.TransferStats, err error) {
	if stats.Filename == "" {
		h.log.Debug("tftp: dropped packet", "err", err)
	}
}

// logName shortens a requested name for the log; slog quotes what needs quoting.
func logName(name string) string {
	if len(name) > 80 {
		return name[:80] + "…"
	}
	return name
}

func remoteOf(t any) netip.AddrPort {
	var a net.UDPAddr
	switch t := t.(type) {
	case tftp.OutgoingTransfer:
		a = t.RemoteAddr()
	case tftp.IncomingTransfer:
		a = t.RemoteAddr()
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// ctxReader ends a transfer at its next block once the server's context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
