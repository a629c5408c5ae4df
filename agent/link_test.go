package agent_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tms/agent"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
	"tms/transfer"
)

// slowLink is a TCP proxy on loopback that delays every byte by delay each way and paces
// what the region sends, over all connections together, at rate bytes/s: a terminal's link
// with a round trip of 2 × delay.
type slowLink struct {
	ln    net.Listener
	to    string
	delay time.Duration
	rate  float64

	mu   sync.Mutex
	free time.Time // when the link's downstream is free again
}

// take books n bytes of the downstream and returns when they have gone through.
func (l *slowLink) take(n int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.free.Before(now) {
		l.free = now
	}
	l.free = l.free.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	return l.free
}

func newSlowLink(tb testing.TB, to string, delay time.Duration, rate float64) *slowLink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := &slowLink{ln: ln, to: to, delay: delay, rate: rate}
	go l.serve()
	tb.Cleanup(func() { ln.Close() })
	return l
}

func (l *slowLink) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", l.to)
		if err != nil {
			c.Close()
			continue
		}
		go l.pipe(c, u, 0)
		go l.pipe(u, c, l.rate)
	}
}

// pipe copies from src to dst, each piece delivered delay after it was read, paced at rate
// (0: not paced).
func (l *slowLink) pipe(src, dst net.Conn, rate float64) {
	type piece struct {
		b   []byte
		due time.Time
	}
	q := make(chan piece, 4096)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- piece{b[:n], time.Now().Add(l.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		if rate > 0 {
			time.Sleep(time.Until(l.take(len(p.b))))
		}
		if _, err := dst.Write(p.b); err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
}

// BenchmarkFetchOverSlowLink fetches a 64 MiB sample image's chunks the way a deploy does,
// through a link of 20 MB/s with 10 and 50 ms of round trip, one request per chunk with 4 at
// once (what agents did before) and through a Window, and reports the rate of compressed bytes
// as a share of the link's (link_share): what keeps a terminal's link full is bytes in flight.
//
//	go test -run '^$' -bench FetchOverSlowLink -benchtime 1x ./agent/
func BenchmarkFetchOverSlowLink(b *testing.B) {
	st, _ := storetest.Dir(b)
	v := storetest.Import(b, st, storetest.SampleDisk(b, 64<<20, 31), "lab").Version
	var ids []manifest.ID
	var compressed int64
	for _, id := range v.Manifest.Chunks {
		if !id.IsZero() {
			ids = append(ids, id)
			fi, err := st.Backend().Stat(context.Background(), store.ChunkKey(id))
			if err != nil {
				b.Fatal(err)
			}
			compressed += fi.Size
		}
	}
	ctx := context.Background()
	region := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		get := func(id manifest.ID) []byte {
			f, err := st.Backend().Get(r.Context(), store.ChunkKey(id))
			if err != nil {
				b.Error(err)
			}
			return f
		}
		if r.Method == http.MethodPost {
			var req agentwire.FramesRequest
			json.NewDecoder(r.Body).Decode(&req)
			w.Header().Set("Content-Type", agentwire.FramesType)
			for _, id := range req.Chunks {
				w.Write(agentwire.AppendBatch(nil, id, get(id)))
			}
			return
		}
		id, _ := manifest.ParseID(r.URL.Path[len("/v1/agent/task/chunks/"):])
		w.Write(get(id))
	}))
	defer region.Close()
	const rate = 20e6
	for _, rtt := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
		link := newSlowLink(b, region.Listener.Addr().String(), rtt/2, rate)
		u, _ := url.Parse("http://" + link.ln.Addr().String())
		client := func() *agent.Client {
			return &agent.Client{Region: u, MAC: "52:54:00:00:00:0a", Token: "t",
				HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
		}
		run := func(name string, fetch func(c *agent.Client) error) {
			b.Run(name+"/rtt="+rtt.String(), func(b *testing.B) {
				for b.Loop() {
					start := time.Now()
					if err := fetch(client()); err != nil {
						b.Fatal(err)
					}
					got := float64(compressed) / time.Since(start).Seconds()
					b.ReportMetric(got/1e6, "MB/s")
					b.ReportMetric(got/rate, "link_share")
				}
			})
		}
		run("per-chunk", func(c *agent.Client) error {
			g := transfer.NewGetter(c)
			return parallel(ids, 4, func(id manifest.ID, buf []byte) error {
				_, err := g.GetChunk(ctx, v.Manifest.Hash, id, buf)
				return err
			})
		})
		run("window", func(c *agent.Client) error {
			w := transfer.NewWindow(c, transfer.WindowOptions{ChunkSize: v.Manifest.ChunkSize})
			defer w.Close()
			go func() {
				for _, id := range ids {
					if w.Want(ctx, v.Manifest.Hash, id) != nil {
						return
					}
				}
			}()
			return parallel(ids, 4, func(id manifest.ID, buf []byte) error {
				_, err := w.GetChunk(ctx, v.Manifest.Hash, id, buf)
				return err
			})
		})
	}
}

// parallel calls f for each id, jobs at once, in order of ids as a deploy's writers take them.
func parallel(ids []manifest.ID, jobs int, f func(manifest.ID, []byte) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, manifest.MaxChunkSize+64)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				if err := f(ids[i], buf); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
