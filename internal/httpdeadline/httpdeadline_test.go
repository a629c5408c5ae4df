package httpdeadline

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"strings"
	"testing"
	"time"
)

const idle = 300 * time.Millisecond

// slack is what a deadline may be late by on a busy machine.
const slack = 2 * time.Second

// result is what a handler saw of its request body.
type result struct {
	n   int64
	err error
	at  time.Time
}

// uploadServer serves POST /up, reading the body and answering how many bytes came.
func uploadServer(t *testing.T, l Limits) (*httptest.Server, <-chan result) {
	t.Helper()
	results := make(chan result, 10)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		results <- result{n, err, time.Now()}
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestTimeout)
			return
		}
		fmt.Fprint(w, n)
	})
	srv := httptest.NewUnstartedServer(Handler(mux, func(*http.Request) Limits { return l }))
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, results
}

// rawPost opens a connection and sends the headers of a POST of size bytes.
func rawPost(t *testing.T, srv *httptest.Server, size int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: tms\r\nContent-Length: %d\r\n\r\n", size)
	return c
}

// closedWithin checks that the server ends c (an answer, then the connection closed) within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open after %s", d)
	}
}

func waitResult(t *testing.T, results <-chan result) result {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not finish")
		return result{}
	}
}

func TestBodyDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits Limits
		size   int
		send   func(c net.Conn) // sends the body, or part of it
		cut    bool             // the server gives up on the body
		within time.Duration    // how soon after the headers the handler must be done
	}{
		{
			name:   "a client that stalls mid-body is cut off",
			limits: Limits{Idle: idle, Progress: 1024},
			size:   100_000,
			send:   func(c net.Conn) { c.Write(make([]byte, 5000)) },
			cut:    true, within: idle + slack,
		},
		{
			name:   "a slowloris sending a byte at a time is cut off",
			limits: Limits{Idle: idle, Progress: 1024},
			size:   100_000,
			send: func(c net.Conn) {
				for range 100 {
					if _, err := c.Write([]byte{'x'}); err != nil {
						return
					}
					time.Sleep(idle / 10)
				}
			},
			cut: true, within: idle + slack,
		},
		{
			name:   "a slow but steady client finishes",
			limits: Limits{Idle: idle, Progress: 1024},
			size:   20 * 4096,
			send: func(c net.Conn) {
				for range 20 { // 2 s in all, well past idle
					c.Write(make([]byte, 4096))
					time.Sleep(idle / 3)
				}
			},
			within: 2*time.Second + slack,
		},
		{
			name:   "a small body must arrive within its total bound",
			limits: Limits{Body: 2 * idle, Idle: idle, Progress: 10},
			size:   1000,
			send: func(c net.Conn) {
				for range 50 { // steady, but 5 s in all
					if _, err := c.Write(make([]byte, 20)); err != nil {
						return
					}
					time.Sleep(idle / 3)
				}
			},
			cut: true, within: 2*idle + slack,
		},
		{
			name:   "a small body sent at once is read",
			limits: Limits{Body: 2 * idle, Idle: idle, Progress: 10},
			size:   1000,
			send:   func(c net.Conn) { c.Write(make([]byte, 1000)) },
			within: slack,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, results := uploadServer(t, tc.limits)
			c := rawPost(t, srv, tc.size)
			start := time.Now()
			go tc.send(c)
			r := waitResult(t, results)
			if took := r.at.Sub(start); took > tc.within {
				t.Errorf("the handler was done after %s; want within %s", took, tc.within)
			}
			if !tc.cut {
				if r.err != nil || r.n != int64(tc.size) {
					t.Fatalf("read %d of %d bytes: %v", r.n, tc.size, r.err)
				}
				return
			}
			if !errors.Is(r.err, ErrStalled) || !errors.Is(r.err, os.ErrDeadlineExceeded) {
				t.Fatalf("read %d bytes, error %v; want ErrStalled", r.n, r.err)
			}
			closedWithin(t, c, slack)
		})
	}
}

// downloadServer serves GET /down: size bytes in one Write; the Write's outcome goes to results.
func downloadServer(t *testing.T, l Limits, size int) (*httptest.Server, <-chan result) {
	t.Helper()
	results := make(chan result, 10)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /down", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		n, err := w.Write(make([]byte, size))
		results <- result{int64(n), err, time.Now()}
	})
	srv := httptest.NewUnstartedServer(Handler(mux, func(*http.Request) Limits { return l }))
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, results
}

// smallBuffers gives accepted connections a send buffer of a real network's size. On loopback
// Linux grows it to megabytes, and a blocked write wakes only when a third of it has drained:
// at the test's rates that is longer than idle.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(128 << 10)
	}
	return c, err
}

func TestResponseDeadlines(t *testing.T) {
	// A longer idle than the body tests': a write wakes in steps of the socket buffers, and the
	// machine may be busy.
	const idle = time.Second
	l := Limits{Idle: idle, Progress: 64 << 10}
	t.Run("a client that does not read is cut off", func(t *testing.T) {
		srv, results := downloadServer(t, l, 256<<20) // far more than socket buffers hold
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET /down HTTP/1.1\r\nHost: tms\r\n\r\n")
		r := waitResult(t, results)
		if !errors.Is(r.err, ErrStalled) || r.n >= 256<<20 {
			t.Fatalf("wrote %d bytes, error %v; want ErrStalled", r.n, r.err)
		}
	})
	t.Run("a slow but steady client gets it all", func(t *testing.T) {
		const size = 4 << 20
		srv, results := downloadServer(t, l, size)
		resp, err := http.Get(srv.URL + "/down")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got int
		buf := make([]byte, 32<<10)
		start := time.Now()
		for { // about 1.6 MB/s: one Write of 4 MiB takes seconds, far past idle
			n, err := io.ReadFull(resp.Body, buf)
			got += n
			if err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		r := waitResult(t, results)
		if r.err != nil || got != size {
			t.Fatalf("client got %d of %d bytes after %s; handler: %v", got, size, time.Since(start), r.err)
		}
		if time.Since(start) < 2*idle {
			t.Fatalf("the download took %s: too fast to test anything", time.Since(start))
		}
	})
}

// TestLongPollAndKeepAlive checks that a handler may wait long before it answers, with no body
// deadline cancelling its request, also on a connection reused after an upload.
func TestLongPollAndKeepAlive(t *testing.T) {
	l := Limits{Body: idle, Idle: idle, Progress: 10}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("GET /poll", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(4 * idle):
			fmt.Fprint(w, "command")
		case <-r.Context().Done():
			http.Error(w, "canceled", http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(Handler(mux, func(*http.Request) Limits { return l }))
	defer srv.Close()

	var reused []bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }})
	do := func(method, path string, body io.Reader) string {
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, body)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := do("POST", "/up", strings.NewReader("hello")); got != "5" {
		t.Fatalf("upload: %q", got)
	}
	if got := do("GET", "/poll", nil); got != "command" {
		t.Fatalf("poll after an upload: %q", got)
	}
	if got := do("GET", "/poll", nil); got != "command" {
		t.Fatalf("second poll: %q", got)
	}
	if len(reused) != 3 || !reused[1] || !reused[2] {
		t.Errorf("connection reuse %v: the test wants one connection for all three", reused)
	}
}

// TestNoLimits passes requests through untouched when Idle is 0.
func TestNoLimits(t *testing.T) {
	srv, results := uploadServer(t, Limits{})
	c := rawPost(t, srv, 3)
	go func() {
		time.Sleep(2 * idle)
		c.Write([]byte("abc"))
	}()
	if r := waitResult(t, results); r.err != nil || r.n != 3 {
		t.Fatalf("read %d bytes: %v", r.n, r.err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !bytes.HasPrefix([]byte(line), []byte("HTTP/1.1 200")) {
		t.Fatalf("answer %q", line)
	}
}
