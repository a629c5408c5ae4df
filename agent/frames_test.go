package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tms/agent"
	"tms/agentwire"
	"tms/manifest"
	"tms/store"
	"tms/transfer"
)

// framesRegion is a region's frames endpoint on loopback that answers with what answer makes
// of the chunk ids asked for: the tests below make it misbehave on purpose.
func framesRegion(t *testing.T, answer func(w http.ResponseWriter, ids []manifest.ID)) *agent.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/agent/task/frames" {
			http.NotFound(w, r)
			return
		}
		var req agentwire.FramesRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", agentwire.FramesType)
		answer(w, req.Chunks)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &agent.Client{Region: u, MAC: "52:54:00:00:00:09", Token: "t", Idle: 200 * time.Millisecond}
}

// sampleChunks returns n chunks of distinct bytes, their ids and their zstd frames.
func sampleChunks(n int) ([]manifest.ID, map[manifest.ID][]byte) {
	codec := store.NewCodec(0)
	ids := make([]manifest.ID, n)
	frames := map[manifest.ID][]byte{}
	for i := range n {
		data := []byte(strings.Repeat("chunk "+string(rune('a'+i))+" ", 5000))
		ids[i] = manifest.BLAKE3.Sum(data)
		frames[ids[i]] = codec.Compress(nil, data)
	}
	return ids, frames
}

func TestWindowHandsOverTheChunksAskedFor(t *testing.T) {
	ids, frames := sampleChunks(5)
	// Counted atomically: the handler runs on the test server's goroutines, and the answer
	// arriving over TCP is no happens-before edge the race detector can see.
	var requests atomic.Int32
	c := framesRegion(t, func(w http.ResponseWriter, asked []manifest.ID) {
		requests.Add(1)
		var b []byte
		for _, id := range asked {
			b = agentwire.AppendBatch(b, id, frames[id])
		}
		w.Write(b)
	})
	ctx := context.Background()
	win := transfer.NewWindow(c, transfer.WindowOptions{ChunkSize: 64 << 10, Batch: 4, Streams: 1})
	defer win.Close()
	// The same chunk twice, as a disk with two equal chunks asks for it.
	order := append(append([]manifest.ID{}, ids...), ids[2])
	for _, id := range order {
		if err := win.Want(ctx, manifest.BLAKE3, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range order {
		data, err := win.GetChunk(ctx, manifest.BLAKE3, id, make([]byte, 0, 64<<10))
		if err != nil || manifest.BLAKE3.Sum(data) != id {
			t.Fatalf("chunk %s: %d bytes, %v", id.Short(), len(data), err)
		}
	}
	// A chunk not wanted first is fetched on its own.
	if data, err := win.GetChunk(ctx, manifest.BLAKE3, ids[4], nil); err != nil || manifest.BLAKE3.Sum(data) != ids[4] {
		t.Fatalf("unwanted chunk: %v", err)
	}
	// 5 distinct wanted chunks in batches of 4 and the unwanted one: 3 requests when every want
	// is in before the first batch leaves; a window that sends its first want alone because the
	// others came a moment later (the race detector on a loaded machine, 1 run in 30) makes 4
	// or 5; 6 would be no batching at all.
	if n := requests.Load(); n < 2 || n > 5 {
		t.Errorf("%d requests for 6 wanted chunks in batches of 4 and one unwanted", n)
	}
}

func TestBadFramesAnswersAreRefused(t *testing.T) {
	ids, frames := sampleChunks(3)
	record := func(id manifest.ID) []byte { return agentwire.AppendBatch(nil, id, frames[id]) }
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, asked []manifest.ID)
		want   error
		// intact: every frame is whole and the right one, and the junk comes after the last:
		// a Window may hand them all over before the answer's end shows the junk.
		intact bool
	}{
		{"a truncated answer", func(w http.ResponseWriter, asked []manifest.ID) {
			for _, id := range asked[:len(asked)-1] {
				w.Write(record(id))
			}
			last := record(asked[len(asked)-1])
			w.Write(last[:len(last)/2])
		}, agentwire.ErrFrames, false},
		{"a record missing", func(w http.ResponseWriter, asked []manifest.ID) {
			for _, id := range asked[:len(asked)-1] {
				w.Write(record(id))
			}
		}, agentwire.ErrFrames, false},
		{"a frame longer than announced", func(w http.ResponseWriter, asked []manifest.ID) {
			for _, id := range asked {
				w.Write(append(record(id), "more bytes than the length said"...))
			}
		}, agentwire.ErrFrames, true},
		{"an id not asked for", func(w http.ResponseWriter, asked []manifest.ID) {
			other := manifest.BLAKE3.Sum([]byte("not asked for"))
			w.Write(agentwire.AppendBatch(nil, other, frames[asked[0]]))
		}, agentwire.ErrFrames, false},
		{"a frame that is not its chunk", func(w http.ResponseWriter, asked []manifest.ID) {
			for _, id := range asked {
				other := ids[0]
				if id == ids[0] {
					other = ids[1]
				}
				w.Write(agentwire.AppendBatch(nil, id, frames[other]))
			}
		}, transfer.ErrSourceCorrupt, false},
		{"a frame with a flipped byte", func(w http.ResponseWriter, asked []manifest.ID) {
			for _, id := range asked {
				f := append([]byte(nil), frames[id]...)
				f[len(f)/2] ^= 0x40
				w.Write(agentwire.AppendBatch(nil, id, f))
			}
		}, transfer.ErrSourceCorrupt, false},
		{"a stalled answer", func(w http.ResponseWriter, asked []manifest.ID) {
			for _, id := range asked[:len(asked)-1] {
				w.Write(record(id))
			}
			last := record(asked[len(asked)-1])
			w.Write(last[:len(last)/2])
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Second)
		}, agent.ErrStalled, false},
		{"no answer at all", func(w http.ResponseWriter, asked []manifest.ID) {
			time.Sleep(2 * time.Second)
		}, agent.ErrStalled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := framesRegion(t, tc.answer)
			ctx := context.Background()
			// The answer to one request of all three chunks: the parser's own checks.
			start := time.Now()
			err := c.GetChunkFrames(ctx, ids, func(n int) []byte { return make([]byte, n) }, func(int, []byte) error { return nil })
			if wire := errors.Is(tc.want, agentwire.ErrFrames) || errors.Is(tc.want, agent.ErrStalled); wire && !errors.Is(err, tc.want) {
				t.Fatalf("one request: got %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("one request took %s to give up", d)
			}
			// Through a Window, as a deploy asks for them (its batches may hold fewer).
			win := transfer.NewWindow(c, transfer.WindowOptions{ChunkSize: 64 << 10, Batch: 3})
			defer win.Close()
			start = time.Now()
			for _, id := range ids {
				if err := win.Want(ctx, manifest.BLAKE3, id); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range ids {
				if _, err = win.GetChunk(ctx, manifest.BLAKE3, id, nil); err != nil {
					break
				}
			}
			if !errors.Is(err, tc.want) && !(tc.intact && err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %s to give up", d)
			}
		})
	}
}

func TestFramesRequestsAreBounded(t *testing.T) {
	c := framesRegion(t, func(w http.ResponseWriter, asked []manifest.ID) { t.Error("a request went out") })
	ctx := context.Background()
	none := func(int) []byte { return nil }
	if err := c.GetChunkFrames(ctx, nil, none, nil); err == nil {
		t.Error("a request for no chunks was sent")
	}
	if err := c.GetChunkFrames(ctx, make([]manifest.ID, agentwire.MaxFramesQuery+1), none, nil); err == nil {
		t.Error("a request over MaxFramesQuery was sent")
	}
}
