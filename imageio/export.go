package imageio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"tms/manifest"
	"tms/store"
)

// ChunkGetter is where Export reads chunks: a store, or a region's chunk endpoint as seen by a
// terminal's agent. GetChunk returns the chunk's bytes checked against id, reusing buf.
type ChunkGetter interface {
	GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error)
}

var _ ChunkGetter = (*store.Store)(nil)

// Fetcher supplies the chunks an export's target lacks, in an order of its own: a swarm's
// tracker decides it. Fetch calls put once for each id in need, with the chunk's bytes checked
// against the id, from any number of goroutines at once, and returns when every one was put or
// with the first error (put's included).
type Fetcher interface {
	Fetch(ctx context.Context, need []manifest.ID, put func(ctx context.Context, id manifest.ID, data []byte) error) error
}

// ExportOptions tune Export.
type ExportOptions struct {
	// Jobs is how many chunks are fetched and written at once (default: 2 per CPU, at least
	// 16 from a remote store).
	Jobs int
	// Progress, if set, is called with bytes handled so far and the disk size.
	Progress func(done, total int64)
	Log      *slog.Logger
	// Verify reads the whole target back after writing and flushing it, past the page cache,
	// and checks every chunk against the manifest: what a deploy to a terminal's disk does
	// before the terminal boots from it.
	Verify bool
	// FixedSize treats a regular-file target as a disk: it must already hold the image and
	// its size is left alone, as a terminal's disk file keeps its size whatever is written.
	FixedSize bool
	// Only, if not nil, limits the export to these chunk indexes of the version, written
	// without reading the target first, and Verify to reading back just those: an update of a
	// disk known to hold a version whose other chunks are the same. Progress then counts the
	// bytes of these chunks only. The target must exist.
	Only []int
	// Fetcher, if set, supplies the chunks the target lacks instead of the getter: Export first
	// finds them (reading and comparing the target as it would), then hands Fetcher the
	// distinct ids and writes each chunk where the version has it as it arrives.
	Fetcher Fetcher
}

// ExportResult says what an export did.
type ExportResult struct {
	DiskSize     int64
	Written      int64 // chunks fetched and written
	WrittenBytes int64
	Skipped      int64 // chunks whose range already held the right bytes
	Zero         int64 // all-zero chunks (holes on files)
	Elapsed      time.Duration
}

// Export writes version v to the file or block device at path. A file is created if needed and
// sized to the disk; a block device must be at least as large as the disk. Ranges of an existing
// target that already hold the right bytes are not written; zero chunks become holes in files.
// Every chunk is checked against its id before it is written. On error the target is left
// partly written and the error says so.
func Export(ctx context.Context, s ChunkGetter, v *store.Version, path string, opts ExportOptions) (*ExportResult, error) {
	start := time.Now()
	if opts.Jobs <= 0 {
		opts.Jobs = defaultJobs(s)
	}
	m := v.Manifest
	indexes, total, err := selectChunks(m, opts.Only)
	if err != nil {
		return nil, err
	}
	if opts.Only != nil {
		if _, err := os.Stat(path); err != nil {
			return nil, &SourceError{path, fmt.Errorf("an export of some chunks needs an existing target: %w", err)}
		}
	}
	f, fresh, oldSize, isDev, err := openTarget(path, m, opts.FixedSize)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Only's chunks are known to differ: they are written without a look at what is there.
	compareOld := opts.Only == nil

	res := &ExportResult{DiskSize: m.DiskSize}
	t := &target{f: f}
	var done atomic.Int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	idx := chunkIndexes(gctx, g, len(m.Chunks), indexes)
	getter := s
	var need map[manifest.ID][]int // chunks a Fetcher brings, and where they go
	if opts.Fetcher != nil {
		getter, need = nil, map[manifest.ID][]int{}
	}
	for range opts.Jobs {
		g.Go(func() error {
			buf := make([]byte, m.ChunkSize)
			cur := make([]byte, m.ChunkSize)
			for i := range idx {
				off, n := m.ChunkRange(i)
				act, nbytes, err := exportOne(gctx, getter, m, t, i, off, n, compareOld && !fresh && off < oldSize, !fresh && off < oldSize, isDev, buf, cur)
				if err != nil {
					return err
				}
				mu.Lock()
				if act == needed {
					need[m.Chunks[i]] = append(need[m.Chunks[i]], i)
					mu.Unlock()
					continue
				}
				switch act {
				case wrote:
					res.Written++
					res.WrittenBytes += nbytes
				case skipped:
					res.Skipped++
				case zeroed:
					res.Zero++
				}
				mu.Unlock()
				d := done.Add(n)
				if opts.Progress != nil {
					opts.Progress(d, total)
				}
			}
			return nil
		})
	}
	err = g.Wait()
	if err == nil && opts.Fetcher != nil {
		err = fetchNeeded(ctx, opts.Fetcher, m, t, need, res, &mu, func(n int64) {
			d := done.Add(n)
			if opts.Progress != nil {
				opts.Progress(d, total)
			}
		})
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("export to %s stopped, the target is incomplete: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return nil, &SourceError{path, fmt.Errorf("flush: %w", err)}
	}
	if opts.Verify {
		if err := verifyTarget(ctx, f, m, indexes, opts.Jobs); err != nil {
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, &SourceError{path, err}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// target serialises writes to the export target. Concurrent pwrites to one file contend on the
// file system's inode lock, which spins in the kernel: exporting 1 GiB with 4 jobs on ext4 took
// 2.1 s with free-for-all writes and 1.8 s with writes taken one at a time while the other jobs
// fetch, decompress and verify.
type target struct {
	f  *os.File
	mu sync.Mutex
}

func (t *target) writeAt(b []byte, off int64) error {
	t.mu.Lock()
	_, err := t.f.WriteAt(b, off)
	t.mu.Unlock()
	if err != nil {
		return &SourceError{t.f.Name(), fmt.Errorf("write at %d: %w", off, err)}
	}
	return nil
}

// selectChunks returns the chunk indexes an export handles (nil: all of them) and their bytes.
func selectChunks(m *manifest.Manifest, only []int) ([]int, int64, error) {
	if only == nil {
		return nil, m.DiskSize, nil
	}
	var total int64
	seen := make(map[int]bool, len(only))
	for _, i := range only {
		if i < 0 || i >= len(m.Chunks) {
			return nil, 0, fmt.Errorf("chunk index %d is outside version %s's %d chunks", i, m.Meta.Name, len(m.Chunks))
		}
		if seen[i] {
			return nil, 0, fmt.Errorf("chunk index %d is named twice", i)
		}
		seen[i] = true
		_, n := m.ChunkRange(i)
		total += n
	}
	return only, total, nil
}

// chunkIndexes feeds the indexes in only (nil: 0..n-1) to the workers of g until they are done
// or g fails.
func chunkIndexes(ctx context.Context, g *errgroup.Group, n int, only []int) <-chan int {
	idx := make(chan int)
	g.Go(func() error {
		defer close(idx)
		count := n
		if only != nil {
			count = len(only)
		}
		for k := range count {
			i := k
			if only != nil {
				i = only[k]
			}
			select {
			case idx <- i:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	return idx
}

type action int

const (
	wrote action = iota
	skipped
	zeroed
	needed // the target lacks the chunk: a Fetcher brings it
)

// exportOne brings the range of chunk i of the target up to date. existing says the range may
// already hold data (an existing file or a device); compare that it is read first and left
// alone if it holds the chunk already.
func exportOne(ctx context.Context, s ChunkGetter, m *manifest.Manifest, t *target, i int, off, n int64,
	compare, existing, isDev bool, buf, cur []byte) (action, int64, error) {
	f := t.f
	id := m.Chunks[i]
	if compare {
		if _, err := f.ReadAt(cur[:n], off); err != nil {
			return 0, 0, &SourceError{f.Name(), fmt.Errorf("read at %d: %w", off, err)}
		}
		if id.IsZero() && isZero(cur[:n]) || !id.IsZero() && m.Hash.Sum(cur[:n]) == id {
			if id.IsZero() {
				return zeroed, 0, nil
			}
			return skipped, 0, nil
		}
	}
	if id.IsZero() {
		if !existing {
			return zeroed, 0, nil // a fresh file: the range is a hole already
		}
		if !isDev {
			err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if err == nil {
				return zeroed, 0, nil
			}
		}
		if err := t.writeAt(zeros[:n], off); err != nil {
			return 0, 0, err
		}
		return zeroed, n, nil
	}
	if s == nil {
		return needed, 0, nil
	}
	data, err := s.GetChunk(ctx, m.Hash, id, buf)
	if err != nil {
		return 0, 0, fmt.Errorf("chunk %d of %d (disk offset %d): %w", i, len(m.Chunks), off, err)
	}
	if int64(len(data)) != n {
		return 0, 0, fmt.Errorf("chunk %d (%s) holds %d bytes, the manifest needs %d", i, id.Short(), len(data), n)
	}
	if err := t.writeAt(data, off); err != nil {
		return 0, 0, err
	}
	return wrote, n, nil
}

// fetchNeeded has f bring the chunks the target lacks (need: id → the indexes that hold it),
// in the version's order of first appearance, and writes each where it goes as it arrives.
func fetchNeeded(ctx context.Context, f Fetcher, m *manifest.Manifest, t *target, need map[manifest.ID][]int,
	res *ExportResult, mu *sync.Mutex, progress func(int64)) error {
	if len(need) == 0 {
		return nil
	}
	ids := make([]manifest.ID, 0, len(need))
	seen := make(map[manifest.ID]bool, len(need))
	for _, id := range m.Chunks {
		if _, ok := need[id]; ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	var put sync.Map // ids already written: a Fetcher that puts one twice is refused
	return f.Fetch(ctx, ids, func(ctx context.Context, id manifest.ID, data []byte) error {
		idx, ok := need[id]
		if !ok {
			return fmt.Errorf("fetched chunk %s is not one the target lacks", id.Short())
		}
		if _, dup := put.LoadOrStore(id, true); dup {
			return fmt.Errorf("chunk %s was fetched twice", id.Short())
		}
		for _, i := range idx {
			off, n := m.ChunkRange(i)
			if int64(len(data)) != n {
				return fmt.Errorf("chunk %d (%s) holds %d bytes, the manifest needs %d", i, id.Short(), len(data), n)
			}
			if err := t.writeAt(data, off); err != nil {
				return err
			}
			mu.Lock()
			res.Written++
			res.WrittenBytes += n
			mu.Unlock()
			progress(n)
		}
		return nil
	})
}

// openTarget opens or creates the export target and makes it the disk's size. fresh says the
// target was just created (all holes); oldSize is how much of it existed before.
func openTarget(path string, m *manifest.Manifest, fixed bool) (f *os.File, fresh bool, oldSize int64, isDev bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, false, 0, false, &SourceError{path, fmt.Errorf("cannot create the target: %w", err)}
		}
		if err := checkSpace(path, m); err != nil {
			f.Close()
			os.Remove(path)
			return nil, false, 0, false, err
		}
		if err := f.Truncate(m.DiskSize); err != nil {
			f.Close()
			os.Remove(path)
			return nil, false, 0, false, &SourceError{path, fmt.Errorf("cannot size the target to %d bytes: %w", m.DiskSize, err)}
		}
		return f, true, 0, false, nil
	case err != nil:
		return nil, false, 0, false, &SourceError{path, err}
	case fi.Mode().IsRegular():
		f, size, _, err := openDisk(path, os.O_RDWR)
		if err != nil {
			return nil, false, 0, false, fmt.Errorf("cannot open the target for writing: %w", err)
		}
		if fixed {
			if size < m.DiskSize {
				f.Close()
				return nil, false, 0, false, &SourceError{path, fmt.Errorf("holds %d bytes, the image needs %d", size, m.DiskSize)}
			}
			return f, false, m.DiskSize, false, nil
		}
		if size != m.DiskSize {
			if err := f.Truncate(m.DiskSize); err != nil {
				f.Close()
				return nil, false, 0, false, &SourceError{path, fmt.Errorf("cannot size the target to %d bytes: %w", m.DiskSize, err)}
			}
		}
		return f, false, min(size, m.DiskSize), false, nil
	default:
		// O_EXCL on a block device fails with EBUSY while it is mounted or in use.
		f, size, dev, err := openDisk(path, os.O_RDWR|os.O_EXCL)
		if err != nil {
			return nil, false, 0, false, fmt.Errorf("cannot open the target for writing: %w", err)
		}
		if !dev {
			f.Close()
			return nil, false, 0, false, &SourceError{path, errors.New("not a regular file or block device")}
		}
		if size < m.DiskSize {
			f.Close()
			return nil, false, 0, false, &SourceError{path, fmt.Errorf("holds %d bytes, the image needs %d", size, m.DiskSize)}
		}
		return f, false, m.DiskSize, true, nil
	}
}

// checkSpace refuses an export to a new file that cannot fit on its file system.
func checkSpace(path string, m *manifest.Manifest) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil // cannot tell; writes will say
	}
	var need int64
	for i, id := range m.Chunks {
		if !id.IsZero() {
			_, n := m.ChunkRange(i)
			need += n
		}
	}
	if avail := int64(st.Bavail) * st.Bsize; avail < need {
		return &SourceError{path, fmt.Errorf("the file system has %d bytes free, the image needs %d", avail, need)}
	}
	return nil
}

// ErrVerify marks a target that does not hold what was written to it.
var ErrVerify = errors.New("read-back verification failed")

// verifyTarget drops the target's cached pages (they are clean after the fsync) and reads every
// chunk back from the device, checking it against the manifest.
// With only (not nil), just those chunks are read back.
func verifyTarget(ctx context.Context, f *os.File, m *manifest.Manifest, only []int, jobs int) error {
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	g, gctx := errgroup.WithContext(ctx)
	idx := chunkIndexes(gctx, g, len(m.Chunks), only)
	for range max(jobs, 1) {
		g.Go(func() error {
			buf := make([]byte, m.ChunkSize)
			for i := range idx {
				off, n := m.ChunkRange(i)
				if _, err := f.ReadAt(buf[:n], off); err != nil {
					return &SourceError{f.Name(), fmt.Errorf("read back at %d: %w", off, err)}
				}
				id := m.Chunks[i]
				if id.IsZero() && !isZero(buf[:n]) || !id.IsZero() && m.Hash.Sum(buf[:n]) != id {
					return &SourceError{f.Name(), fmt.Errorf("%w: chunk %d at offset %d does not hold what was written", ErrVerify, i, off)}
				}
			}
			return nil
		})
	}
	return g.Wait()
}
