package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tms/manifest"
	"tms/store"
	"tms/transfer"
)

// memSource is a BatchSource in memory that counts the chunks asked for.
type memSource struct {
	frames map[manifest.ID][]byte
	asked  atomic.Int64
	mu     sync.Mutex
	sizes  []int // batch sizes
	fail   error
}

func (s *memSource) String() string { return "memory" }

func (s *memSource) GetChunkFrames(ctx context.Context, ids []manifest.ID, buf func(int) []byte, fn func(int, []byte) error) error {
	s.asked.Add(int64(len(ids)))
	s.mu.Lock()
	s.sizes = append(s.sizes, len(ids))
	s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for i, id := range ids {
		f := s.frames[id]
		b := buf(len(f))[:len(f)]
		copy(b, f)
		if err := fn(i, b); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func memChunks(n int) (*memSource, []manifest.ID) {
	codec := store.NewCodec(0)
	src := &memSource{frames: map[manifest.ID][]byte{}}
	var ids []manifest.ID
	for i := range n {
		data := fmt.Appendf(nil, "chunk %d", i)
		id := manifest.BLAKE3.Sum(data)
		src.frames[id] = codec.Compress(nil, data)
		ids = append(ids, id)
	}
	return src, ids
}

func TestWindowKeepsWithinItsBytes(t *testing.T) {
	src, ids := memChunks(100)
	const chunk = 64 << 10
	w := transfer.NewWindow(src, transfer.WindowOptions{ChunkSize: chunk, Bytes: 8 * chunk, Batch: 3})
	defer w.Close()
	ctx := context.Background()
	var wanted atomic.Int64
	go func() {
		for _, id := range ids {
			if err := w.Want(ctx, manifest.BLAKE3, id); err != nil {
				t.Error(err)
				return
			}
			wanted.Add(1)
		}
	}()
	for i, id := range ids {
		time.Sleep(time.Millisecond) // a writer slower than the source
		// As Export does: a chunk is wanted before it is asked for. Under load the wanting
		// goroutine can fall behind the writer, which would then fetch the chunk on its own.
		for wanted.Load() <= int64(i) {
			time.Sleep(100 * time.Microsecond)
		}
		data, err := w.GetChunk(ctx, manifest.BLAKE3, id, nil)
		if err != nil || manifest.BLAKE3.Sum(data) != id {
			t.Fatalf("chunk %d: %v", i, err)
		}
		// Taken: i+1. Wanted and not taken never exceeds 8 chunks.
		if ahead := wanted.Load() - int64(i+1); ahead > 8 {
			t.Fatalf("%d chunks wanted ahead of the writer, the window holds 8", ahead)
		}
	}
	if got := src.asked.Load(); got != 100 {
		t.Errorf("asked for %d chunks, want 100: each once", got)
	}
	for _, n := range src.sizes {
		if n > 3 {
			t.Fatalf("a batch of %d, more than 3", n)
		}
	}
}

func TestWindowStopsAtTheFirstFailure(t *testing.T) {
	src, ids := memChunks(4)
	boom := errors.New("reset by peer")
	src.fail = boom
	w := transfer.NewWindow(src, transfer.WindowOptions{ChunkSize: 64 << 10})
	ctx := context.Background()
	for _, id := range ids {
		if err := w.Want(ctx, manifest.BLAKE3, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if _, err := w.GetChunk(ctx, manifest.BLAKE3, id, nil); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the source's error", err)
		}
	}
	w.Close()
	// A canceled writer does not wait for its chunk.
	w2 := transfer.NewWindow(&blockedSource{}, transfer.WindowOptions{ChunkSize: 64 << 10})
	defer w2.Close()
	w2.Want(ctx, manifest.BLAKE3, ids[0])
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := w2.GetChunk(cctx, manifest.BLAKE3, ids[0], nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the writer's deadline", err)
	}
}

// blockedSource answers nothing until its request is canceled (Close).
type blockedSource struct{}

func (blockedSource) String() string { return "blocked" }
func (blockedSource) GetChunkFrames(ctx context.Context, _ []manifest.ID, _ func(int) []byte, _ func(int, []byte) error) error {
	<-ctx.Done()
	return ctx.Err()
}
