package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"tms/agentwire"
	"tms/disklabel"
	"tms/manifest"
	"tms/store"
)

// batchChunks is how many chunks a capture reads, names and uploads at a time.
const batchChunks = 64

// capture reads the disk, uploads the chunks the region lacks and publishes the manifest.
func (a *Agent) capture(ctx context.Context, c *Client, ti agentwire.TaskInfo, pr *reporter) (agentwire.Result, error) {
	f, err := os.Open(a.Disk)
	if err != nil {
		return agentwire.Result{}, permanent(fmt.Errorf("cannot open the disk: %w", err))
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil || size == 0 {
		return agentwire.Result{}, permanent(fmt.Errorf("disk %s: cannot tell its size or it is empty (%v)", a.Disk, err))
	}
	m := &manifest.Manifest{Format: manifest.Format, Hash: ti.Hash, DiskSize: size, ChunkSize: ti.ChunkSize,
		Meta:   manifest.Meta{Name: ti.Image, Created: time.Now().UTC().Truncate(time.Second), Source: "capture"},
		Chunks: make([]manifest.ID, manifest.NumChunks(size, ti.ChunkSize))}
	if err := m.Validate(); err != nil {
		return agentwire.Result{}, permanent(fmt.Errorf("cannot capture disk %s: %w", a.Disk, err))
	}
	if pt, err := disklabel.Read(f, size); err != nil {
		a.log().Warn("partition table not readable; captured without it", "err", err)
	} else {
		m.Meta.Partitions = pt
	}
	up := &uploader{c: c, f: f, m: m, jobs: a.jobs(), pr: pr, codec: store.NewCodec(0), known: map[manifest.ID]bool{}}
	pr.setPhase(agentwire.PhaseReading, size)
	if err := up.scan(ctx); err != nil {
		return agentwire.Result{}, err
	}
	enc, err := manifest.Encode(m)
	if err != nil {
		return agentwire.Result{}, permanent(err)
	}
	for try := 0; ; try++ {
		res, err := c.Publish(ctx, enc)
		var e *APIError
		if err == nil || try >= 2 || !errors.As(err, &e) || e.Status != http.StatusConflict || !e.Retry {
			return res, err
		}
		// The region lost chunks it had (its store was cleaned meanwhile): send them again.
		a.log().Warn("region asks for chunks again", "err", err)
		if err := up.resend(ctx); err != nil {
			return agentwire.Result{}, err
		}
	}
}

// uploader cuts the disk into chunks, names them, and uploads the ones the region lacks.
type uploader struct {
	c     *Client
	f     *os.File
	m     *manifest.Manifest
	jobs  int
	pr    *reporter
	codec *store.Codec
	known map[manifest.ID]bool // held by the region or uploaded in this run
}

// batch is a run of consecutive chunks read from the disk.
type batch struct {
	first, n int
	buf      []byte
}

func (u *uploader) chunk(b *batch, i int) []byte {
	cs := u.m.ChunkSize
	_, n := u.m.ChunkRange(b.first + i)
	return b.buf[int64(i)*cs : int64(i)*cs+n]
}

// scan reads and names every chunk, in batches, while the previous batch uploads.
func (u *uploader) scan(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	ready := make(chan *batch, 1)
	free := make(chan *batch, 2)
	for range 2 {
		free <- &batch{buf: make([]byte, batchChunks*u.m.ChunkSize)}
	}
	g.Go(func() error {
		defer close(ready)
		for first := 0; first < len(u.m.Chunks); first += batchChunks {
			var b *batch
			select {
			case b = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			b.first, b.n = first, min(batchChunks, len(u.m.Chunks)-first)
			if err := u.read(gctx, b); err != nil {
				return err
			}
			select {
			case ready <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	g.Go(func() error {
		for b := range ready {
			if err := u.send(gctx, b); err != nil {
				return err
			}
			end, n := u.m.ChunkRange(b.first + b.n - 1)
			u.pr.done.Store(end + n)
			free <- b
		}
		return nil
	})
	return g.Wait()
}

// read fills b from the disk and names its chunks.
func (u *uploader) read(ctx context.Context, b *batch) error {
	off, _ := u.m.ChunkRange(b.first)
	last, n := u.m.ChunkRange(b.first + b.n - 1)
	if _, err := u.f.ReadAt(b.buf[:last+n-off], off); err != nil {
		return permanent(fmt.Errorf("disk %s: read at %d: %w", u.f.Name(), off, err))
	}
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(u.jobs)
	for i := range b.n {
		g.Go(func() error {
			data := u.chunk(b, i)
			if isZero(data) {
				u.m.Chunks[b.first+i] = manifest.ID{}
			} else {
				u.m.Chunks[b.first+i] = u.m.Hash.Sum(data)
			}
			return nil
		})
	}
	return g.Wait()
}

var zeros = make([]byte, manifest.MaxChunkSize)

func isZero(b []byte) bool { return string(b) == string(zeros[:len(b)]) }

// send asks which of b's chunks the region lacks and uploads them.
func (u *uploader) send(ctx context.Context, b *batch) error {
	var ask []manifest.ID
	where := map[manifest.ID]int{}
	for i := range b.n {
		id := u.m.Chunks[b.first+i]
		if id.IsZero() || u.known[id] {
			continue
		}
		if _, dup := where[id]; !dup {
			where[id] = i
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	missing, err := u.c.Missing(ctx, ask)
	if err != nil {
		return err
	}
	var need []int
	for _, id := range missing {
		i, ok := where[id]
		if !ok {
			return fmt.Errorf("region asked for chunk %s, which this batch does not hold", id.Short())
		}
		need = append(need, i)
	}
	if err := u.upload(ctx, len(missing), func(k int) ([]byte, manifest.ID) {
		i := need[k]
		return u.chunk(b, i), u.m.Chunks[b.first+i]
	}); err != nil {
		return err
	}
	for _, id := range ask {
		u.known[id] = true
	}
	return nil
}

// upload compresses n chunks (get returns the k-th) and sends them as one batch.
func (u *uploader) upload(ctx context.Context, n int, get func(k int) ([]byte, manifest.ID)) error {
	if n == 0 {
		return nil
	}
	frames := make([][]byte, n)
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(u.jobs)
	for k := range n {
		g.Go(func() error {
			data, _ := get(k)
			frames[k] = u.codec.Compress(nil, data)
			return nil
		})
	}
	g.Wait()
	var body []byte
	for k := range n {
		_, id := get(k)
		body = agentwire.AppendBatch(body, id, frames[k])
	}
	if err := u.c.Upload(ctx, body); err != nil {
		return err
	}
	for _, fr := range frames {
		u.pr.sent.Add(int64(len(fr)))
	}
	return nil
}

// resend uploads every chunk of the manifest that the region says it lacks, re-reading each
// from the disk and checking it still has the bytes it was named for.
func (u *uploader) resend(ctx context.Context) error {
	at := map[manifest.ID]int{}
	var ids []manifest.ID
	for i, id := range u.m.Chunks {
		if _, ok := at[id]; !ok && !id.IsZero() {
			at[id] = i
			ids = append(ids, id)
		}
	}
	for len(ids) > 0 {
		n := min(len(ids), agentwire.MaxMissingQuery)
		missing, err := u.c.Missing(ctx, ids[:n])
		if err != nil {
			return err
		}
		ids = ids[n:]
		for len(missing) > 0 {
			k := min(len(missing), batchChunks)
			bufs := make([][]byte, k)
			for j, id := range missing[:k] {
				off, size := u.m.ChunkRange(at[id])
				bufs[j] = make([]byte, size)
				if _, err := u.f.ReadAt(bufs[j], off); err != nil {
					return permanent(fmt.Errorf("disk %s: read at %d: %w", u.f.Name(), off, err))
				}
				if u.m.Hash.Sum(bufs[j]) != id {
					return permanent(fmt.Errorf("disk %s changed while it was captured (at offset %d): capture it again while nothing writes to it", u.f.Name(), off))
				}
			}
			part := missing[:k]
			if err := u.upload(ctx, k, func(j int) ([]byte, manifest.ID) { return bufs[j], part[j] }); err != nil {
				return err
			}
			missing = missing[k:]
		}
	}
	return nil
}
