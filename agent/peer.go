package agent

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"tms/agentwire"
	"tms/manifest"
	"tms/store"
	"tms/swarm"
)

// Peer service limits.
const (
	// peerUploads bounds the chunks a member sends at once; the tracker assigns at most
	// swarm.Options.PeerUploads (3), one more is room for a request it gave up on.
	peerUploads = 4
	// peerFrameCache bounds the compressed chunks a member keeps in memory to serve without
	// reading its disk again and compressing.
	peerFrameCache = 64 << 20
	// peerFetchTimeout bounds one chunk fetched from a peer: a peer that stalls is given up
	// on and reported, and the tracker sends the member elsewhere.
	peerFetchTimeout = 15 * time.Second
	// peerDialTimeout bounds connecting to a peer: on one LAN a peer that is there answers in
	// milliseconds.
	peerDialTimeout = 3 * time.Second
)

// peerServer serves the chunks a member holds to the other members of its swarm, over TLS with
// a key made for this task. It serves only chunks of the version the member writes, only once
// written and checked, and only to a requester whose peer token (signed by the region, for
// this version, its address and the key its certificate proves it holds) checks out.
type peerServer struct {
	v      *store.Version
	chunks []manifest.ID
	index  map[manifest.ID]int // chunk id → its index in chunks
	first  []int               // chunk index → the first manifest index holding it
	disk   *os.File
	key    ed25519.PrivateKey
	cert   tls.Certificate
	ln     net.Listener
	srv    *http.Server
	log    *slog.Logger
	codec  *store.Codec
	slots  chan struct{}

	mu    sync.Mutex
	have  swarm.Bitmap
	keys  [][]byte // the region's token keys
	cache frameCache
	asked time.Time // when a peer with a valid token last asked for a chunk
}

// lastAsked is when a peer with a valid token last asked for a chunk (zero: never).
func (p *peerServer) lastAsked() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked
}

// newPeerServer starts serving on addr (host:port; port 0 picks one) the chunks of v that
// disk holds.
func newPeerServer(v *store.Version, chunks []manifest.ID, disk, addr string, log *slog.Logger, wrap func(http.Handler) http.Handler) (*peerServer, error) {
	p := &peerServer{v: v, chunks: chunks, index: make(map[manifest.ID]int, len(chunks)), first: make([]int, len(chunks)),
		log: log, codec: store.NewCodec(0), slots: make(chan struct{}, peerUploads), have: swarm.NewBitmap(len(chunks))}
	p.cache.max = peerFrameCache
	for i, id := range chunks {
		p.index[id] = i
		p.first[i] = -1
	}
	for i, id := range v.Manifest.Chunks {
		if k, ok := p.index[id]; ok && p.first[k] < 0 {
			p.first[k] = i
		}
	}
	var err error
	if p.key, p.cert, err = peerCertificate(); err != nil {
		return nil, err
	}
	if p.disk, err = os.Open(disk); err != nil {
		return nil, fmt.Errorf("peer service: %w", err)
	}
	if p.ln, err = net.Listen("tcp", addr); err != nil {
		p.disk.Close()
		return nil, fmt.Errorf("peer service: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agentwire.PeerChunkPath+"{chunk}", p.serveChunk)
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(mux)
	}
	p.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: peerFetchTimeout, IdleTimeout: time.Minute,
		MaxHeaderBytes: 8 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{p.cert}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13}}
	go p.srv.ServeTLS(p.ln, "", "")
	return p, nil
}

// Port is the port the service listens on.
func (p *peerServer) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// PublicKey is the key of the service's certificate.
func (p *peerServer) PublicKey() ed25519.PublicKey { return p.key.Public().(ed25519.PublicKey) }

// Close stops serving.
func (p *peerServer) Close() {
	p.srv.Close()
	p.disk.Close()
}

// setKeys takes the region's current token keys.
// signingKeys are the region's token keys the member holds.
func (p *peerServer) signingKeys() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys
}

func (p *peerServer) setKeys(keys [][]byte) {
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
}

// held marks chunk i written and checked, keeping its frame (if known) to serve.
func (p *peerServer) held(i int, frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.have.Set(i)
	if frame != nil {
		p.cache.add(p.chunks[i], frame)
	}
}

// haveSnapshot returns a copy of what the member holds.
func (p *peerServer) haveSnapshot() swarm.Bitmap {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append(swarm.Bitmap(nil), p.have...)
}

func (p *peerServer) serveChunk(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, format string, args ...any) {
		http.Error(w, fmt.Sprintf(format, args...), status)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		refuse(http.StatusUnauthorized, "a peer shows its certificate")
		return
	}
	key, ok := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		refuse(http.StatusUnauthorized, "a peer's certificate holds an ed25519 key")
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip, err := netip.ParseAddr(host)
	if err != nil {
		refuse(http.StatusBadRequest, "cannot read the request's address")
		return
	}
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	tok, err := swarm.CheckToken(keys, r.Header.Get(agentwire.PeerTokenHeader), time.Now(), p.v.ID, ip.Unmap(), key)
	if err != nil {
		p.log.Warn("swarm: refused a peer's request", "from", ip, "err", err)
		refuse(http.StatusForbidden, "%v", err)
		return
	}
	id, err := manifest.ParseID(r.PathValue("chunk"))
	if err != nil {
		refuse(http.StatusBadRequest, "chunk id: %v", err)
		return
	}
	i, ok := p.index[id]
	if !ok {
		refuse(http.StatusNotFound, "chunk %s is not part of version %s", id.Short(), p.v.ID.Short())
		return
	}
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	default:
		refuse(http.StatusServiceUnavailable, "busy: %d chunks on their way", peerUploads)
		return
	}
	p.mu.Lock()
	p.asked = time.Now()
	held := p.have.Has(i)
	frame := p.cache.get(id)
	p.mu.Unlock()
	if !held {
		refuse(http.StatusNotFound, "chunk %s is not here yet", id.Short())
		return
	}
	if frame == nil {
		if frame, err = p.readFrame(i); err != nil {
			p.log.Error("swarm: cannot serve a chunk from the disk", "chunk", id.Short(), "err", err)
			refuse(http.StatusInternalServerError, "%v", err)
			return
		}
	}
	p.log.Debug("swarm: serving a chunk", "to", tok.Member, "chunk", id.Short())
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Length", fmt.Sprint(len(frame)))
	w.Write(frame)
}

// readFrame reads chunk i back from the disk, checks it and compresses it.
func (p *peerServer) readFrame(i int) ([]byte, error) {
	m := p.v.Manifest
	off, n := m.ChunkRange(p.first[i])
	buf := make([]byte, n)
	if _, err := p.disk.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read chunk %d at %d: %w", i, off, err)
	}
	if m.Hash.Sum(buf) != p.chunks[i] {
		return nil, fmt.Errorf("the disk at %d no longer holds chunk %s", off, p.chunks[i].Short())
	}
	frame := p.codec.Compress(nil, buf)
	p.mu.Lock()
	p.cache.add(p.chunks[i], frame)
	p.mu.Unlock()
	return frame, nil
}

// peerCertificate makes a key and a self-signed certificate for it. Peers do not check it
// against an authority: each pins the key the region gave it for the member.
func peerCertificate() (ed25519.PrivateKey, tls.Certificate, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return key, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// peerClient fetches chunks from other members, one HTTP client per peer, each pinning the key
// the region gave for it.
type peerClient struct {
	cert    tls.Certificate
	timeout time.Duration // per chunk (default peerFetchTimeout)
	mu      sync.Mutex
	byID    map[string]*peerConn
}

type peerConn struct {
	addr string
	key  string // the pinned key
	hc   *http.Client
}

// ErrBadPeer marks a chunk a peer sent that is not the chunk: corrupt, or cut short.
var ErrBadPeer = errors.New("the peer sent bad bytes")

// errPeerGone marks a fetch from a peer that could not be connected to at all.
var errPeerGone = errors.New("the peer cannot be reached")

// client returns the HTTP client for peer p, made anew if its address or key changed.
func (pc *peerClient) client(p agentwire.SwarmPeer) *peerConn {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if c := pc.byID[p.Member]; c != nil && c.addr == p.Addr && c.key == string(p.Key) {
		return c
	}
	want := ed25519.PublicKey(append([]byte(nil), p.Key...))
	cfg := &tls.Config{Certificates: []tls.Certificate{pc.cert}, MinVersion: tls.VersionTLS13,
		// The certificate is self-signed: what counts is that it holds the key the region
		// named for this member.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the peer showed no certificate")
			}
			if k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey); !ok || !k.Equal(want) {
				return errors.New("the peer's certificate does not hold the key the region named")
			}
			return nil
		}}
	dialer := &net.Dialer{Timeout: peerDialTimeout}
	tr := &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: cfg, MaxIdleConnsPerHost: peerUploads, IdleConnTimeout: 30 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 5 * time.Second, ForceAttemptHTTP2: false}
	c := &peerConn{addr: p.Addr, key: string(p.Key), hc: &http.Client{Transport: tr}}
	if old := pc.byID[p.Member]; old != nil {
		old.hc.CloseIdleConnections()
	}
	if pc.byID == nil {
		pc.byID = map[string]*peerConn{}
	}
	pc.byID[p.Member] = c
	return c
}

// close drops every connection.
func (pc *peerClient) close() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, c := range pc.byID {
		c.hc.CloseIdleConnections()
	}
}

// get fetches chunk id's frame from peer p with token tok. A body that is longer than a frame
// may be or shorter than announced is ErrBadPeer.
func (pc *peerClient) get(ctx context.Context, p agentwire.SwarmPeer, tok string, id manifest.ID) ([]byte, error) {
	c := pc.client(p)
	timeout := pc.timeout
	if timeout <= 0 {
		timeout = peerFetchTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.Addr+agentwire.PeerChunkPath+id.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(agentwire.PeerTokenHeader, tok)
	resp, err := c.hc.Do(req)
	if err != nil {
		if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w: %v", errPeerGone, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("peer %s: %s: %s", p.Member, resp.Status, strings.TrimSpace(string(b)))
	}
	if resp.ContentLength < 0 || resp.ContentLength > agentwire.MaxFrame {
		return nil, fmt.Errorf("%w: announced %d bytes for one chunk", ErrBadPeer, resp.ContentLength)
	}
	b := make([]byte, resp.ContentLength)
	if _, err := io.ReadFull(resp.Body, b); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("peer %s stalled: %w", p.Member, ctx.Err())
		}
		return nil, fmt.Errorf("%w: body cut short: %v", ErrBadPeer, err)
	}
	return b, nil
}

// frameCache keeps recently received frames up to max bytes, dropping the least recently
// used. Not safe for concurrent use (peerServer.mu guards it).
type frameCache struct {
	max, size int
	order     list.List // of *cached, most recent first
	byID      map[manifest.ID]*list.Element
}

type cached struct {
	id    manifest.ID
	frame []byte
}

func (c *frameCache) get(id manifest.ID) []byte {
	e := c.byID[id]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*cached).frame
}

func (c *frameCache) add(id manifest.ID, frame []byte) {
	if c.byID == nil {
		c.byID = map[manifest.ID]*list.Element{}
	}
	if _, ok := c.byID[id]; ok || len(frame) > c.max {
		return
	}
	c.byID[id] = c.order.PushFront(&cached{id, frame})
	c.size += len(frame)
	for c.size > c.max {
		e := c.order.Back()
		old := e.Value.(*cached)
		c.order.Remove(e)
		delete(c.byID, old.id)
		c.size -= len(old.frame)
	}
}
