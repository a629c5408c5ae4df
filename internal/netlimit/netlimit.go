// Package netlimit caps the connections a listener keeps open, per client address and in all,
// so that one host on a classroom network cannot take every connection (or file descriptor) a
// server has.
//
// A connection over a cap is closed as soon as it is accepted: the client sees its connection
// closed or reset, and Accept goes on to the next one. Refusals are logged at most once per
// interval per address, with how many there were.
//
//	ln, err := net.Listen("tcp", ":8081")
//	ln = netlimit.Listen(ln, netlimit.Options{PerIP: 64, Total: 2048, Log: log})
//	http.Serve(ln, handler)
package netlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Options are a Listener's caps. A cap of 0 means none.
type Options struct {
	// PerIP is the most connections open at once from one IP address.
	PerIP int
	// Total is the most connections open at once.
	Total int
	// LogEvery is how often refusals of one address are logged at most (default 1 minute).
	LogEvery time.Duration
	Log      *slog.Logger
	// Now stands in for time.Now in tests.
	Now func() time.Time
}

// Listener is a net.Listener whose accepted connections count against its caps until they are
// closed.
type Listener struct {
	net.Listener
	o Options

	mu      sync.Mutex
	open    map[netip.Addr]int
	total   int
	refused map[netip.Addr]*refusals
}

// refusals are an address's refused connections since they were last logged.
type refusals struct {
	n      int
	logged time.Time
}

// Listen wraps ln with the caps of o.
func Listen(ln net.Listener, o Options) *Listener {
	if o.LogEvery <= 0 {
		o.LogEvery = time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Listener{Listener: ln, o: o, open: map[netip.Addr]int{}, refused: map[netip.Addr]*refusals{}}
}

// Accept returns the next connection within the caps, closing the ones over them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if l.admit(ip) {
			return &conn{Conn: c, l: l, ip: ip}, nil
		}
		c.Close()
	}
}

// Open returns how many accepted connections from ip are open, and how many in all.
func (l *Listener) Open(ip netip.Addr) (fromIP, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[ip.Unmap()], l.total
}

func (l *Listener) admit(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	var why string
	switch {
	case l.o.Total > 0 && l.total >= l.o.Total:
		why = "the server has as many connections open as it takes"
	case l.o.PerIP > 0 && l.open[ip] >= l.o.PerIP:
		why = "the address has as many connections open as one client may"
	default:
		l.open[ip]++
		l.total++
		return true
	}
	r := l.refused[ip]
	if r == nil {
		if len(l.refused) >= 4096 {
			l.forgetRefusals()
		}
		r = &refusals{}
		l.refused[ip] = r
	}
	r.n++
	if now := l.o.Now(); now.Sub(r.logged) >= l.o.LogEvery {
		l.o.Log.Warn("connections refused: "+why, "remote", ip, "refused", r.n,
			"open_from_remote", l.open[ip], "open", l.total, "max_per_ip", l.o.PerIP, "max", l.o.Total)
		r.n, r.logged = 0, now
	}
	return false
}

// forgetRefusals drops the refusal counts that have been logged and whose interval has passed,
// so that many addresses cannot grow the map without bound; if none can go, all go (a few
// refusals then go unlogged).
func (l *Listener) forgetRefusals() {
	now := l.o.Now()
	for ip, r := range l.refused {
		if now.Sub(r.logged) >= l.o.LogEvery {
			delete(l.refused, ip)
		}
	}
	if len(l.refused) >= 4096 {
		clear(l.refused)
	}
}

func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// remoteIP is c's peer address; connections that are not IP (a Unix socket) share the zero
// address.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// conn gives its place back when it is first closed.
type conn struct {
	net.Conn
	l    *Listener
	ip   netip.Addr
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
