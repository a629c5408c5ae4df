package transfer

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/semaphore"

	"tms/manifest"
	"tms/store"
)

// BatchSource gives the stored frames of many chunks in one request: a region's frames
// endpoint, as its terminals' agents see it (agent.Client).
type BatchSource interface {
	// GetChunkFrames calls fn with the frame of each of ids, in the order of ids, as they
	// arrive, each read into a slice buf returns (at least size bytes long). It returns an
	// error if any frame did not come.
	GetChunkFrames(ctx context.Context, ids []manifest.ID, buf func(size int) []byte, fn func(i int, frame []byte) error) error
	String() string
}

// WindowOptions tune a Window.
type WindowOptions struct {
	// ChunkSize is the version's chunk size: what each chunk wanted counts against Bytes.
	ChunkSize int64
	// Bytes bounds the chunks wanted and not yet taken, at ChunkSize each (default 64 MiB): what
	// is in flight plus what waits to be written. Enough bytes in flight that the link, not
	// round trips, sets the pace: 1 Gbit/s with 50 ms of round trip needs 6 MB of compressed
	// frames on the way.
	Bytes int64
	// Batch is the most chunks asked for in one request (default 32, and at most what lets
	// two requests fit in Bytes).
	Batch int
	// Streams is how many requests are kept going even when their batch is not full yet
	// (default 2): a new request starts while the last one's answer is still arriving.
	Streams int
}

// Window reads chunks from a BatchSource for a writer of disks (imageio.Export, as an
// imageio.Prefetcher): told which chunks will be asked for (Want), it asks for them in batches
// ahead of time, with up to Bytes of chunks wanted and not yet taken, so a terminal's link
// stays full whatever its round trip. GetChunk hands over each chunk decompressed and checked
// against its id, as Getter does; a chunk that was not wanted first is fetched on its own.
// Frames wait in buffers that are reused. Close stops what is in flight.
//
//	w := transfer.NewWindow(client, transfer.WindowOptions{ChunkSize: m.ChunkSize})
//	defer w.Close()
//	res, err := imageio.Export(ctx, w, v, disk, opts)
type Window struct {
	src    BatchSource
	codec  *store.Codec
	opts   WindowOptions
	room   *semaphore.Weighted
	ctx    context.Context
	cancel context.CancelFunc
	frames sync.Pool // *[]byte
	wg     sync.WaitGroup

	mu       sync.Mutex
	wanted   map[manifest.ID][]*wanted // wanted and not yet taken, by id, oldest first
	next     []*wanted                 // wanted and not yet asked for
	inflight int
	failed   error // the first request that failed: nothing more is handed over
}

type wanted struct {
	id    manifest.ID
	asked bool
	done  chan struct{} // closed when frame or err is set
	frame *[]byte
	err   error
}

// NewWindow returns a Window on src.
func NewWindow(src BatchSource, opts WindowOptions) *Window {
	if opts.ChunkSize <= 0 || opts.ChunkSize > manifest.MaxChunkSize {
		opts.ChunkSize = manifest.MaxChunkSize
	}
	if opts.Bytes <= 0 {
		opts.Bytes = 64 << 20
	}
	opts.Bytes = max(opts.Bytes, 2*opts.ChunkSize)
	if opts.Batch <= 0 {
		opts.Batch = 32
	}
	opts.Batch = int(max(1, min(int64(opts.Batch), opts.Bytes/(2*opts.ChunkSize))))
	if opts.Streams <= 0 {
		opts.Streams = 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Window{src: src, codec: store.NewCodec(0), opts: opts, room: semaphore.NewWeighted(opts.Bytes),
		ctx: ctx, cancel: cancel, wanted: map[manifest.ID][]*wanted{}}
}

// Want says chunk id will be asked for. It waits while Bytes of chunks are wanted and not
// yet taken.
func (w *Window) Want(ctx context.Context, h manifest.Hash, id manifest.ID) error {
	if err := w.room.Acquire(ctx, w.opts.ChunkSize); err != nil {
		return err
	}
	c := &wanted{id: id, done: make(chan struct{})}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wanted[id] = append(w.wanted[id], c)
	w.next = append(w.next, c)
	if len(w.next) >= w.opts.Batch || w.inflight < w.opts.Streams {
		w.ask()
	}
	return nil
}

// ask starts a request for the chunks wanted and not yet asked for. w.mu is held.
func (w *Window) ask() {
	batch := w.next
	w.next = nil
	for _, c := range batch {
		c.asked = true
	}
	w.inflight++
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.fetch(batch)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.inflight--
		if len(w.next) > 0 && w.inflight < w.opts.Streams {
			w.ask()
		}
	}()
}

// fetch asks for batch's frames and hands each to its waiter as it arrives.
func (w *Window) fetch(batch []*wanted) {
	ids := make([]manifest.ID, len(batch))
	for i, c := range batch {
		ids[i] = c.id
	}
	var cur *[]byte
	got := 0
	err := w.src.GetChunkFrames(w.ctx, ids, func(size int) []byte {
		cur = w.frameBuf(size)
		return (*cur)[:size]
	}, func(i int, frame []byte) error {
		*cur = frame
		batch[i].frame, cur = cur, nil
		close(batch[i].done)
		got = i + 1
		return nil
	})
	if cur != nil {
		w.frames.Put(cur)
	}
	if err == nil && got < len(batch) {
		err = fmt.Errorf("%d of %d frames came", got, len(batch))
	}
	if err != nil && w.ctx.Err() == nil {
		w.mu.Lock()
		if w.failed == nil {
			w.failed = err
		}
		w.mu.Unlock()
	}
	for _, c := range batch[got:] {
		c.err = err
		close(c.done)
	}
}

func (w *Window) frameBuf(size int) *[]byte {
	if bp, ok := w.frames.Get().(*[]byte); ok && cap(*bp) >= size {
		return bp
	}
	b := make([]byte, size, max(size, int(w.opts.ChunkSize+w.opts.ChunkSize/64+1024)))
	return &b
}

// GetChunk returns chunk id's bytes, decompressed into buf and checked with hash h: the frame
// wanted longest ago for id, waiting for it if it has not come yet, or fetched now if id was
// not wanted.
func (w *Window) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	w.mu.Lock()
	q := w.wanted[id]
	if len(q) == 0 {
		w.mu.Unlock()
		return w.getOne(ctx, h, id, buf)
	}
	c := q[0]
	if len(q) == 1 {
		delete(w.wanted, id)
	} else {
		w.wanted[id] = q[1:]
	}
	if !c.asked {
		w.ask() // the writer waits for it: ask now, whatever the batch holds
	}
	w.mu.Unlock()
	defer w.room.Release(w.opts.ChunkSize)
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	w.mu.Lock()
	err := w.failed
	w.mu.Unlock()
	if c.err != nil {
		err = c.err
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s from %s: %w", id, w.src, err)
	}
	defer w.frames.Put(c.frame)
	return decodeChunk(w.codec, w.src.String(), h, id, *c.frame, buf)
}

// getOne fetches one chunk that was not wanted.
func (w *Window) getOne(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	var data []byte
	err := w.src.GetChunkFrames(ctx, []manifest.ID{id}, func(size int) []byte { return make([]byte, size) }, func(_ int, frame []byte) error {
		var err error
		data, err = decodeChunk(w.codec, w.src.String(), h, id, frame, buf)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("chunk %s from %s: %w", id, w.src, err)
	}
	return data, nil
}

// Close stops the requests in flight and waits for them to end. Chunks wanted and not taken
// are dropped.
func (w *Window) Close() {
	w.cancel()
	w.wg.Wait()
}

// decodeChunk decompresses a frame from src into buf and checks it against id.
func decodeChunk(codec *store.Codec, src string, h manifest.Hash, id manifest.ID, frame, buf []byte) ([]byte, error) {
	data, err := codec.Decompress(buf, frame, manifest.MaxChunkSize)
	if err != nil {
		return nil, fmt.Errorf("chunk %s from %s: %w: %v", id, src, ErrSourceCorrupt, err)
	}
	if got := h.Sum(data); got != id {
		return nil, fmt.Errorf("chunk %s from %s hashes to %s: %w", id, src, got.Short(), ErrSourceCorrupt)
	}
	return data, nil
}
