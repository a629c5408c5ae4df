// Package imageio moves disk images between raw files or block devices and a store.
//
// Import reads a disk once, hashing, compressing and storing its chunks with a bounded pool of
// workers, and publishes the version only when every chunk is durable. Export writes a version to
// a file or device with a bounded pool of positioned writes, leaving alone ranges that already
// hold the right bytes.
//
//	res, err := imageio.Import(ctx, st, "/dev/sda", imageio.ImportOptions{Name: "win11"})
//	res, err := imageio.Export(ctx, st, version, "/dev/sdb", imageio.ExportOptions{})
package imageio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"tms/disklabel"
	"tms/manifest"
	"tms/store"
)

// DefaultChunkSize is the chunk size of new images; docs/format.md has the measurement behind it.
const DefaultChunkSize = 256 << 10

// commitEvery bounds how much an import stages before it makes chunks durable, so an
// interrupted import keeps most of its work and a retry skips it.
const commitEvery = 512 << 20

// defaultJobs is how many chunks are in flight at once: enough to keep every CPU busy on a
// local store, and enough to hide request latency on a remote one.
func defaultJobs(s any) int {
	n := 2 * runtime.GOMAXPROCS(0)
	if st, ok := s.(*store.Store); ok {
		if _, local := st.Backend().(store.Batcher); local {
			return n
		}
	}
	return max(n, 16)
}

// ImportOptions tune Import.
type ImportOptions struct {
	Name string
	Tag  string // default manifest.DefaultTag
	// ChunkSize and Hash default to those of the version the tag points to, so a new version
	// shares chunks with its parent, and for a new image to DefaultChunkSize and
	// manifest.DefaultHash.
	ChunkSize int64
	Hash      manifest.Hash
	// Jobs is how many chunks are hashed, compressed and stored at once (default: 2 per CPU,
	// at least 16 on a remote store).
	Jobs int
	// Source goes into the manifest's meta.source (default: "file:" and the path).
	Source string
	// Progress, if set, is called with bytes read so far and the disk size.
	Progress func(done, total int64)
	Log      *slog.Logger
	// Now gives the creation time (default time.Now).
	Now func() time.Time
}

// ImportResult says what an import did.
type ImportResult struct {
	Version *store.Version
	// Unchanged is true when the disk matched the version the tag already pointed to; then no
	// new version was made and Version is that one.
	Unchanged bool
	DiskSize  int64
	Chunks    int64 // chunks in the disk
	Zero      int64 // all-zero chunks (not stored)
	Distinct  int64 // distinct non-zero chunks
	Stats     store.Stats
	Elapsed   time.Duration
}

// SourceError is an error about the disk or file an import reads, or the target an export writes.
type SourceError struct {
	Path string
	Err  error
}

func (e *SourceError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *SourceError) Unwrap() error { return e.Err }

// openDisk opens a regular file or block device and returns its size.
func openDisk(path string, flag int) (*os.File, int64, bool, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, false, &SourceError{path, err}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, false, &SourceError{path, err}
	}
	switch {
	case fi.Mode().IsRegular():
		return f, fi.Size(), false, nil
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, 0, false, &SourceError{path, fmt.Errorf("size of block device: %w", err)}
		}
		return f, size, true, nil
	}
	f.Close()
	return nil, 0, false, &SourceError{path, errors.New("not a regular file or block device")}
}

type chunkJob struct {
	index int
	buf   []byte
	zero  bool
}

// Import reads the disk image at path into s as a new version of opts.Name:opts.Tag, whose
// parent is the version the tag pointed to. If ctx is cancelled, chunks already stored stay
// durable (so a second run skips them) and nothing is published.
func Import(ctx context.Context, s *store.Store, path string, opts ImportOptions) (*ImportResult, error) {
	start := time.Now()
	if opts.Tag == "" {
		opts.Tag = manifest.DefaultTag
	}
	if opts.Jobs <= 0 {
		opts.Jobs = defaultJobs(s)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := manifest.ValidateName(opts.Name); err != nil {
		return nil, err
	}
	if err := manifest.ValidateTag(opts.Tag); err != nil {
		return nil, err
	}
	if opts.Hash != "" && !opts.Hash.Valid() {
		return nil, fmt.Errorf("unknown hash %q: use %s or %s", opts.Hash, manifest.BLAKE3, manifest.SHA256)
	}

	f, size, _, err := openDisk(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size == 0 {
		return nil, &SourceError{path, errors.New("is empty")}
	}
	if opts.Source == "" {
		opts.Source = "file:" + path
	}
	lock, err := s.LockShared(ctx, fmt.Sprintf("import of %s:%s", opts.Name, opts.Tag), func(h store.LockInfo) {
		opts.Log.Info("waiting for the store", "holder", h.String())
	})
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)

	var parent *store.Version
	switch id, err := s.GetTag(ctx, opts.Name, opts.Tag); {
	case err == nil:
		if parent, err = s.GetManifest(ctx, id); err != nil {
			return nil, fmt.Errorf("read current version of %s:%s: %w", opts.Name, opts.Tag, err)
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}

	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
		if parent != nil {
			opts.ChunkSize = parent.Manifest.ChunkSize
		}
	}
	if opts.Hash == "" {
		opts.Hash = manifest.DefaultHash
		if parent != nil {
			opts.Hash = parent.Manifest.Hash
		}
	}
	probe := &manifest.Manifest{Format: manifest.Format, Hash: opts.Hash, DiskSize: size, ChunkSize: opts.ChunkSize,
		Meta:   manifest.Meta{Name: opts.Name, Created: time.Unix(0, 0).UTC(), Source: opts.Source},
		Chunks: make([]manifest.ID, manifest.NumChunks(size, opts.ChunkSize))}
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("cannot import %s: %w", path, err)
	}
	res := &ImportResult{DiskSize: size, Chunks: int64(len(probe.Chunks))}
	ids := probe.Chunks
	if err := importChunks(ctx, s, f, size, ids, opts, res); err != nil {
		return nil, err
	}
	if err := lock.Err(); err != nil {
		return nil, fmt.Errorf("import of %s stopped before publishing: %w", path, err)
	}

	m := &manifest.Manifest{Format: manifest.Format, Hash: opts.Hash, DiskSize: size, ChunkSize: opts.ChunkSize, Chunks: ids,
		Meta: manifest.Meta{Name: opts.Name, Created: opts.Now().UTC().Truncate(time.Second), Source: opts.Source}}
	if pt, err := disklabel.Read(f, size); err != nil {
		return nil, &SourceError{path, err}
	} else {
		m.Meta.Partitions = pt
	}
	if parent != nil {
		pm := parent.Manifest
		if pm.Hash == m.Hash && pm.DiskSize == m.DiskSize && pm.ChunkSize == m.ChunkSize && equalIDs(pm.Chunks, m.Chunks) {
			res.Version, res.Unchanged = parent, true
			res.Elapsed = time.Since(start)
			return res, nil
		}
		m.Parent = parent.ID
	}
	enc, err := manifest.Encode(m)
	if err != nil {
		return nil, err
	}
	v, err := s.PutVersion(ctx, enc, res.Stats)
	if err != nil {
		return nil, err
	}
	if err := s.SetTag(ctx, opts.Name, opts.Tag, v.ID); err != nil {
		return nil, fmt.Errorf("version %s is stored but tag %s:%s could not be set: %w", v.ID.Short(), opts.Name, opts.Tag, err)
	}
	res.Version = v
	res.Elapsed = time.Since(start)
	return res, nil
}

func equalIDs(a, b []manifest.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// importChunks reads the disk in order with one reader and hands chunks to opts.Jobs workers
// that hash, deduplicate, compress and store them, filling ids.
func importChunks(ctx context.Context, s *store.Store, f *os.File, size int64, ids []manifest.ID, opts ImportOptions, res *ImportResult) error {
	cs := opts.ChunkSize
	w := s.NewChunkWriter()
	g, gctx := errgroup.WithContext(ctx)

	free := make(chan []byte, opts.Jobs+2)
	for range cap(free) {
		free <- make([]byte, cs)
	}
	jobs := make(chan chunkJob, opts.Jobs)
	var done atomic.Int64
	var mu sync.Mutex
	claimed := map[manifest.ID]bool{} // chunks of this import already handled by a worker
	var staged atomic.Int64

	g.Go(func() error {
		defer close(jobs)
		holes := newHoleFinder(f, size)
		for i := range ids {
			off := int64(i) * cs
			n := min(cs, size-off)
			if holes.isHole(off, n) {
				select {
				case jobs <- chunkJob{index: i, zero: true}:
				case <-gctx.Done():
					return gctx.Err()
				}
				continue
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				return &SourceError{f.Name(), fmt.Errorf("read at %d: %w", off, err)}
			}
			select {
			case jobs <- chunkJob{index: i, buf: buf[:n]}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})

	for range opts.Jobs {
		g.Go(func() error {
			scratch := make([]byte, 0, cs+cs/8+64)
			for j := range jobs {
				n := int64(len(j.buf))
				if j.zero || isZero(j.buf) {
					if j.zero {
						_, n = chunkRange(j.index, cs, size)
					}
					mu.Lock()
					res.Zero++
					mu.Unlock()
				} else if err := importOne(gctx, s, w, opts.Hash, j, ids, &mu, claimed, res, &staged, &scratch); err != nil {
					return err
				}
				if j.buf != nil {
					free <- j.buf[:cap(j.buf)]
				}
				d := done.Add(n)
				if opts.Progress != nil {
					opts.Progress(d, size)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	// Whatever happened, chunks written so far are kept durable: a retry skips them.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if cerr := w.Commit(cctx); cerr != nil {
		w.Abort()
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	return ctx.Err()
}

func importOne(ctx context.Context, s *store.Store, w *store.ChunkWriter, h manifest.Hash, j chunkJob, ids []manifest.ID,
	mu *sync.Mutex, claimed map[manifest.ID]bool, res *ImportResult, staged *atomic.Int64, scratch *[]byte) error {
	id := h.Sum(j.buf)
	ids[j.index] = id
	mu.Lock()
	dup := claimed[id]
	claimed[id] = true
	if !dup {
		res.Distinct++
	}
	mu.Unlock()
	if dup {
		return nil
	}
	size, err := s.StatChunk(ctx, id)
	if err == nil {
		mu.Lock()
		res.Stats.StoredBytes += size
		mu.Unlock()
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	size, err = w.Put(ctx, id, j.buf, *scratch)
	if err != nil {
		return err
	}
	mu.Lock()
	res.Stats.StoredBytes += size
	res.Stats.AddedBytes += size
	res.Stats.AddedChunks++
	mu.Unlock()
	if staged.Add(size) >= commitEvery {
		staged.Store(0)
		return w.Commit(ctx)
	}
	return nil
}

func chunkRange(i int, cs, size int64) (int64, int64) {
	off := int64(i) * cs
	return off, min(cs, size-off)
}

var zeros = make([]byte, manifest.MaxChunkSize)

func isZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

// holeFinder asks the file system where a sparse file's data is (SEEK_DATA), so ranges in holes
// are known to be zero without reading them.
type holeFinder struct {
	f        *os.File
	size     int64
	nextData int64 // no data before this offset
	ok       bool
}

func newHoleFinder(f *os.File, size int64) *holeFinder {
	return &holeFinder{f: f, size: size, ok: true}
}

func (h *holeFinder) isHole(off, n int64) bool {
	if !h.ok {
		return false
	}
	if off < h.nextData {
		return off+n <= h.nextData
	}
	d, err := unix.Seek(int(h.f.Fd()), off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		h.nextData = h.size // no data after off
	case err != nil:
		h.ok = false // the file system cannot tell: read everything
		return false
	default:
		h.nextData = d
	}
	return off+n <= h.nextData
}
