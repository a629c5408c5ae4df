// Package httpdeadline gives each HTTP request read and write deadlines that follow its
// progress, so that a client which sends or reads slowly on purpose (a slowloris) is cut off
// while a slow but steady one finishes.
//
// A request's body must arrive, and its response be taken, at Limits.Progress bytes or more in
// every Limits.Idle (or the body must end within it); Limits.Body also bounds the whole body's
// time, for small requests. The time a handler spends before it writes is not bounded: a long
// poll may wait as long as it likes. Deadlines are set on the connection through
// http.ResponseController; a read or write that misses one fails with an error that wraps
// both ErrStalled and os.ErrDeadlineExceeded, and the server closes the connection.
//
//	h := httpdeadline.Handler(mux, func(r *http.Request) httpdeadline.Limits {
//		if r.URL.Path == "/upload" {
//			return httpdeadline.Limits{Idle: 30 * time.Second, Progress: 64 << 10}
//		}
//		return httpdeadline.Limits{Body: 10 * time.Second, Idle: 10 * time.Second}
//	})
//	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
//
// The server's ReadHeaderTimeout bounds the request line and headers; leave its ReadTimeout and
// WriteTimeout zero, or they cut off long transfers whatever their progress. Deadlines are per
// connection, so this suits HTTP/1.1; under HTTP/2 they apply per stream.
package httpdeadline

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Limits are one request's deadlines.
type Limits struct {
	// Body bounds the time the whole request body may take to arrive; 0 means no bound but
	// Idle's.
	Body time.Duration
	// Idle is the window in which Progress bytes of the body or of the response must move.
	Idle time.Duration
	// Progress is how many bytes must move in each Idle (default 1): the slowest rate allowed
	// is Progress per Idle. Writes are cut into pieces of this size.
	Progress int
}

// ErrStalled marks a request whose body or response moved slower than its Limits allow.
var ErrStalled = errors.New("stalled")

// Handler wraps h so that each request gets the deadlines limits returns for it.
func Handler(h http.Handler, limits func(*http.Request) Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := limits(r)
		if l.Idle <= 0 {
			h.ServeHTTP(w, r)
			return
		}
		if l.Progress <= 0 {
			l.Progress = 1
		}
		rc := http.NewResponseController(w)
		now := time.Now()
		// A keep-alive connection keeps the write deadline of its previous request.
		rc.SetWriteDeadline(time.Time{})
		if r.Body != nil && r.Body != http.NoBody {
			b := &body{rc: rc, rd: r.Body, l: l}
			if l.Body > 0 {
				b.end = now.Add(l.Body)
			}
			b.extend(now)
			r.Body = b
		}
		dw := &writer{ResponseWriter: w, rc: rc, l: l}
		h.ServeHTTP(dw, r)
		// net/http flushes what is buffered after the handler returns.
		rc.SetWriteDeadline(time.Now().Add(l.Idle))
	})
}

// body extends the connection's read deadline as the body arrives.
type body struct {
	rc    *http.ResponseController
	rd    io.ReadCloser
	l     Limits
	end   time.Time // the whole body's deadline, or zero
	moved int       // bytes since the deadline was last extended
}

func (b *body) extend(now time.Time) {
	d := now.Add(b.l.Idle)
	if !b.end.IsZero() && b.end.Before(d) {
		d = b.end
	}
	b.rc.SetReadDeadline(d)
	b.moved = 0
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rd.Read(p)
	if err == nil {
		// Past the body's end, net/http reads the connection in the background with no
		// deadline; only extend while the body is being read.
		if b.moved += n; b.moved >= b.l.Progress {
			b.extend(time.Now())
		}
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		limit := fmt.Sprintf("moved less than %d bytes in %s", b.l.Progress, b.l.Idle)
		if b.l.Body > 0 {
			limit += fmt.Sprintf(" or took over %s", b.l.Body)
		}
		err = fmt.Errorf("%w: the request body %s: %w", ErrStalled, limit, err)
	}
	return n, err
}

func (b *body) Close() error { return b.rd.Close() }

// writer sets a write deadline for each piece of the response.
type writer struct {
	http.ResponseWriter
	rc *http.ResponseController
	l  Limits
}

func (w *writer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), w.l.Progress)]
		w.rc.SetWriteDeadline(time.Now().Add(w.l.Idle))
		n, err := w.ResponseWriter.Write(piece)
		written += n
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w: the client took less than %d bytes of the response in %s: %w", ErrStalled, w.l.Progress, w.l.Idle, err)
			}
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Flush sends what is buffered, within Idle.
func (w *writer) Flush() {
	w.rc.SetWriteDeadline(time.Now().Add(w.l.Idle))
	w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
