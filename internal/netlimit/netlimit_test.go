package netlimit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// server listens on 127.0.0.1 behind the caps of o and hands out what it accepts.
func server(t *testing.T, o Options) (*Listener, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln, o)
	accepted := make(chan net.Conn, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	})
	return l, accepted
}

// dial connects to l from the loopback address from (127.0.0.1, 127.0.0.2...).
func dial(t *testing.T, l net.Listener, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// admitted waits for the server to hand out the next connection.
func admitted(t *testing.T, accepted <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not accepted")
		return nil
	}
}

// refused checks that the server closed c without handing it out.
func refused(t *testing.T, c net.Conn, accepted <-chan net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a connection over the cap was kept open (read: %v)", err)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection over the cap from %s was handed out", c.RemoteAddr())
	default:
	}
}

func TestPerIPCap(t *testing.T) {
	l, accepted := server(t, Options{PerIP: 3})
	var mine []net.Conn
	for range 3 {
		dial(t, l, "127.0.0.1")
		mine = append(mine, admitted(t, accepted))
	}
	refused(t, dial(t, l, "127.0.0.1"), accepted)
	// Another address has its own share.
	dial(t, l, "127.0.0.2")
	admitted(t, accepted)
	if n, total := l.Open(netip.MustParseAddr("127.0.0.1")); n != 3 || total != 4 {
		t.Errorf("open: %d from 127.0.0.1, %d in all; want 3 and 4", n, total)
	}
	// A closed connection gives its place back, once however often it is closed.
	mine[0].Close()
	mine[0].Close()
	dial(t, l, "127.0.0.1")
	admitted(t, accepted)
	refused(t, dial(t, l, "127.0.0.1"), accepted)
}

func TestTotalCap(t *testing.T) {
	l, accepted := server(t, Options{PerIP: 5, Total: 2})
	dial(t, l, "127.0.0.1")
	a := admitted(t, accepted)
	dial(t, l, "127.0.0.2")
	admitted(t, accepted)
	refused(t, dial(t, l, "127.0.0.3"), accepted)
	a.Close()
	dial(t, l, "127.0.0.3")
	admitted(t, accepted)
}

func TestNoCaps(t *testing.T) {
	l, accepted := server(t, Options{})
	for range 50 {
		dial(t, l, "127.0.0.1")
		admitted(t, accepted)
	}
}

// records collects log records.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) refusedCounts() (out []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "refused" {
				out = append(out, a.Value.Int64())
			}
			return true
		})
	}
	return out
}

// TestRefusalsLoggedOncePerInterval checks that a flood of refused connections logs one line
// per address per interval, counting them.
func TestRefusalsLoggedOncePerInterval(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var logs records
	l, accepted := server(t, Options{PerIP: 1, LogEvery: time.Minute, Log: slog.New(&logs), Now: clock})
	dial(t, l, "127.0.0.1")
	admitted(t, accepted)

	refused(t, dial(t, l, "127.0.0.1"), accepted) // logged at once
	for range 4 {
		refused(t, dial(t, l, "127.0.0.1"), accepted)
	}
	if got := logs.refusedCounts(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("after 5 refusals within a minute: logged counts %v, want [1]", got)
	}
	advance(time.Minute)
	refused(t, dial(t, l, "127.0.0.1"), accepted)
	if got := logs.refusedCounts(); len(got) != 2 || got[1] != 5 {
		t.Fatalf("a minute later: logged counts %v, want [1 5]", got)
	}
}

// TestConcurrentChurn opens and closes many connections at once from several addresses (run
// with -race); afterwards nothing counts as open.
func TestConcurrentChurn(t *testing.T) {
	l, accepted := server(t, Options{PerIP: 4, Total: 10})
	stop := make(chan struct{})
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			select {
			case c := <-accepted:
				go func() {
					time.Sleep(time.Millisecond)
					c.Close()
				}()
			case <-stop:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range 8 {
		from := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			for range 50 {
				c, err := d.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				c.Read(make([]byte, 1)) // ends when the server closes it
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	served.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, total := l.Open(netip.MustParseAddr("127.0.0.1"))
		if total == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still count as open", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
