package imageio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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
	// Where Elapsed went: fetching and writing, the flush (fsync) after it, and the read-back
	// verification that was left after the flush (0 without Verify).
	Write, Flush, Verify time.Duration
	// VerifyTotal is the time spent reading back and checking, most of it beside the writes.
	VerifyTotal time.Duration
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
	t := &target{f: f, holes: !isDev}
	var done atomic.Int64
	var mu sync.Mutex
	// The read-back runs behind the writes: each stretch of the disk whose chunks are all
	// handled is flushed and read back while later ones are still being written.
	var vr *verifier
	if opts.Verify {
		vr = newVerifier(ctx, t, m, indexes, opts.Jobs)
		defer vr.stop()
		if compareOld && !fresh && oldSize > 0 {
			// What the target holds is read from the device, not from pages cached before
			// the export: a chunk found in place is then read back already.
			if err := f.Sync(); err != nil {
				return nil, &SourceError{path, fmt.Errorf("flush: %w", err)}
			}
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
	}
	count := func(i int, act action, nbytes, n int64) {
		if vr != nil {
			// A chunk found in place was just read from the device and checked; one
			// written, or zeroed by writing, is read back.
			vr.handled(i, act == skipped || act == zeroed && nbytes == 0)
		}
		mu.Lock()
		switch act {
		case wrote:
			res.Written++
			res.WrittenBytes += nbytes
		case skipped:
			res.Skipped++
		case zeroed, punched:
			res.Zero++
		}
		mu.Unlock()
		d := done.Add(n)
		if opts.Progress != nil {
			opts.Progress(d, total)
		}
	}
	// Three stages: look at what the target holds (Jobs at once), tell a Prefetcher which
	// chunks will be asked for, in order, then fetch, check and write (Jobs at once). The first
	// runs ahead of the last as far as the getter lets Want run ahead, so a getter that fetches
	// over a network keeps its window full while the writers are busy.
	g, gctx := errgroup.WithContext(ctx)
	idx := chunkIndexes(gctx, g, len(m.Chunks), indexes)
	want := make(chan int)
	fetch := make(chan int)
	var looking sync.WaitGroup
	var need map[manifest.ID][]int // with a Fetcher: the chunks it brings, and where they go
	if opts.Fetcher != nil {
		need = map[manifest.ID][]int{}
	}
	for range opts.Jobs {
		looking.Add(1)
		g.Go(func() error {
			defer looking.Done()
			var cur []byte
			for i := range idx {
				off, n := m.ChunkRange(i)
				existing := !fresh && off < oldSize
				compare := compareOld && existing
				if compare && cur == nil {
					cur = make([]byte, m.ChunkSize)
				}
				act, nbytes, err := prepareOne(t, m, i, off, n, compare, existing, isDev, cur)
				if err != nil {
					return err
				}
				if act != fetchIt {
					count(i, act, nbytes, n)
					continue
				}
				if need != nil {
					mu.Lock()
					need[m.Chunks[i]] = append(need[m.Chunks[i]], i)
					mu.Unlock()
					continue
				}
				select {
				case want <- i:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		looking.Wait()
		close(want)
		return nil
	})
	pre, _ := s.(Prefetcher)
	g.Go(func() error {
		defer close(fetch)
		for i := range want {
			if pre != nil {
				if err := pre.Want(gctx, m.Hash, m.Chunks[i]); err != nil {
					return err
				}
			}
			select {
			case fetch <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range opts.Jobs {
		g.Go(func() error {
			// Room past the chunk lets the zstd decoder use its fast copies up to the end.
			buf := make([]byte, m.ChunkSize, m.ChunkSize+decodeSlack)
			for i := range fetch {
				off, n := m.ChunkRange(i)
				if err := fetchOne(gctx, s, m, t, i, off, n, buf); err != nil {
					return err
				}
				count(i, wrote, n, n)
			}
			return nil
		})
	}
	err = g.Wait()
	if err == nil && opts.Fetcher != nil {
		err = fetchNeeded(ctx, opts.Fetcher, m, t, need, func(i int, n int64) { count(i, wrote, n, n) })
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("export to %s stopped, the target is incomplete: %w", path, err)
	}
	res.Write = time.Since(start)
	if err := f.Sync(); err != nil {
		return nil, &SourceError{path, fmt.Errorf("flush: %w", err)}
	}
	res.Flush = time.Since(start) - res.Write
	if vr != nil {
		if err := vr.finish(); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		res.Verify = time.Since(start) - res.Write - res.Flush
		res.VerifyTotal = vr.busy
	}
	if err := f.Close(); err != nil {
		return nil, &SourceError{path, err}
	}
	res.Elapsed = time.Since(start)
	if opts.Log != nil {
		opts.Log.Debug("export done", "target", path, "written", res.Written, "skipped", res.Skipped, "zero", res.Zero,
			"write", res.Write, "flush", res.Flush, "verify", res.Verify, "verify_total", res.VerifyTotal)
	}
	return res, nil
}

// decodeSlack is the room past a chunk's end that its decompression buffer gets: with 16 bytes
// or more the zstd decoder copies in 16-byte blocks to the last block of a frame (decompressing
// the sample disk's chunks into a buffer of exactly the chunk's size took the slower, exact
// copies for 60% of the decoding time).
const decodeSlack = 64

// Prefetcher is a ChunkGetter that fetches ahead. Export calls Want with the id of each chunk
// it will ask for, in the order it will ask (about: its workers ask at once), before it asks
// for it; Want may block until there is room, to bound what is held. Each id wanted is asked
// for once with GetChunk, unless the export fails first (the Prefetcher's owner then stops it).
type Prefetcher interface {
	ChunkGetter
	Want(ctx context.Context, h manifest.Hash, id manifest.ID) error
}

// target serialises writes to the export target. Concurrent pwrites to one file contend on the
// file system's inode lock, which spins in the kernel: exporting 1 GiB with 4 jobs on ext4 took
// 2.1 s with free-for-all writes and 1.8 s with writes taken one at a time while the other jobs
// fetch, decompress and verify.
type target struct {
	f     *os.File
	holes bool // a regular file: SEEK_DATA tells where it has holes
	mu    sync.Mutex
}

// isHole reports whether the target's range [off, off+n) is a hole of a sparse file (all
// zero, known without reading it). It asks the file system each time (SEEK_DATA), which is
// safe with writers at other offsets and costs less than reading the range.
func (t *target) isHole(off, n int64) bool {
	if !t.holes {
		return false
	}
	d, err := unix.Seek(int(t.f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true // no data from off to the end
	}
	return err == nil && d >= off+n
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
	fetchIt // the chunk is to be fetched and written
	punched // an all-zero chunk made a hole (counted as zeroed)
)

// prepareOne looks at the range of chunk i of the target: it says whether the chunk must be
// fetched, or brings the range up to date itself (skipped: it holds the chunk already; zeroed:
// an all-zero chunk, written as a hole or zeros). existing says the range may already hold data
// (an existing file or a device); compare that it is read first and left alone if it holds the
// chunk already.
func prepareOne(t *target, m *manifest.Manifest, i int, off, n int64, compare, existing, isDev bool, cur []byte) (action, int64, error) {
	f := t.f
	id := m.Chunks[i]
	if compare {
		switch {
		case t.isHole(off, n):
			// A hole reads as zeros: an all-zero chunk is there; any other is not.
			if id.IsZero() {
				return zeroed, 0, nil
			}
			return fetchIt, 0, nil
		default:
			if _, err := f.ReadAt(cur[:n], off); err != nil {
				return 0, 0, &SourceError{f.Name(), fmt.Errorf("read at %d: %w", off, err)}
			}
			// Zeros never hash to the id of a chunk that is not all zero (such a chunk has
			// the zero id), so a zero range is settled without hashing it.
			zero := isZero(cur[:n])
			if id.IsZero() && zero {
				return zeroed, 0, nil
			}
			if !id.IsZero() && !zero && m.Hash.Sum(cur[:n]) == id {
				return skipped, 0, nil
			}
		}
	}
	if !id.IsZero() {
		return fetchIt, 0, nil
	}
	if !existing {
		return zeroed, 0, nil // a fresh file: the range is a hole already
	}
	if !isDev {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return punched, 0, nil
		}
	}
	if err := t.writeAt(zeros[:n], off); err != nil {
		return 0, 0, err
	}
	return zeroed, n, nil
}

// fetchOne fetches chunk i, checked against its id by s, and writes it at off.
func fetchOne(ctx context.Context, s ChunkGetter, m *manifest.Manifest, t *target, i int, off, n int64, buf []byte) error {
	id := m.Chunks[i]
	data, err := s.GetChunk(ctx, m.Hash, id, buf)
	if err != nil {
		return fmt.Errorf("chunk %d of %d (disk offset %d): %w", i, len(m.Chunks), off, err)
	}
	if int64(len(data)) != n {
		return fmt.Errorf("chunk %d (%s) holds %d bytes, the manifest needs %d", i, id.Short(), len(data), n)
	}
	return t.writeAt(data, off)
}

// fetchNeeded has f bring the chunks the target lacks (need: id → the indexes that hold it),
// in the version's order of first appearance, and writes each where it goes as it arrives.
func fetchNeeded(ctx context.Context, f Fetcher, m *manifest.Manifest, t *target, need map[manifest.ID][]int,
	written func(i int, n int64)) error {
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
			written(i, n)
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

// verifySpan is how much of the disk the read-back takes at a time behind the writes.
const verifySpan = 64 << 20

// verifier reads the target back behind an export's writes and checks every chunk against
// the manifest. Once every chunk of a stretch of verifySpan bytes or more at the front of what
// is not yet verified has been handled, it flushes that stretch to the device
// (sync_file_range), drops its cached pages (they are clean then) and reads it back from the
// device (with O_DIRECT where the file system takes it), while the writers go on further along
// the disk. What is left when the writes end is read back after the fsync. Only the chunks of
// the export (only, when not nil) are read back, and not those found in place, which were read
// from the device when the target was looked at.
type verifier struct {
	ctx    context.Context
	cancel context.CancelFunc
	in     []bool // the chunks to read back; nil: all
	t      *target
	m      *manifest.Manifest
	jobs   int
	bufs   [][]byte
	direct *os.File // the target opened with O_DIRECT, or nil where that cannot be

	mu      sync.Mutex
	settled []bool // handled, or not part of the export
	checked []bool // read from the device and found right while looking at the target
	next    int    // every chunk before next is settled
	from    int    // every chunk before from is verified or queued
	closed  bool

	spans chan [2]int
	done  chan error
	once  sync.Once
	err   error         // the read-back's outcome, once wait has it
	busy  time.Duration // time spent verifying; read after wait
}

func newVerifier(ctx context.Context, t *target, m *manifest.Manifest, only []int, jobs int) *verifier {
	v := &verifier{t: t, m: m, jobs: max(jobs, 1), settled: make([]bool, len(m.Chunks)), checked: make([]bool, len(m.Chunks)),
		spans: make(chan [2]int, len(m.Chunks)/max(1, int(verifySpan/m.ChunkSize))+2), done: make(chan error, 1)}
	v.ctx, v.cancel = context.WithCancel(ctx)
	if only != nil {
		v.in = make([]bool, len(m.Chunks))
		for i := range v.settled {
			v.settled[i] = true
		}
		for _, i := range only {
			v.settled[i] = false
			v.in[i] = true
		}
	}
	for v.next < len(v.settled) && v.settled[v.next] {
		v.next++
	}
	for range v.jobs {
		v.bufs = append(v.bufs, alignedBuf(m.ChunkSize))
	}
	if d, err := os.OpenFile(t.f.Name(), os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		v.direct = d
	}
	go v.run()
	return v
}

// handled says chunk i is written (or was found in place).
// checked says it was read from the device and found right: it is not read back again.
func (v *verifier) handled(i int, checked bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.settled[i] = true
	if checked {
		v.checked[i] = true
	}
	for v.next < len(v.settled) && v.settled[v.next] {
		v.next++
	}
	if v.closed || v.next == v.from {
		return
	}
	start, _ := v.m.ChunkRange(v.from)
	end, n := v.m.ChunkRange(v.next - 1)
	if end+n-start >= verifySpan {
		v.spans <- [2]int{v.from, v.next} // never blocks: room for every span of the disk
		v.from = v.next
	}
}

func (v *verifier) run() {
	var err error
	for span := range v.spans {
		if err == nil {
			start := time.Now()
			err = v.verify(span[0], span[1])
			v.busy += time.Since(start)
		}
	}
	if v.direct != nil {
		v.direct.Close()
	}
	v.done <- err
}

// finish reads back what is left, once the writes are done and flushed, and returns the first
// failure of the whole read-back.
func (v *verifier) finish() error {
	v.mu.Lock()
	if !v.closed && v.from < len(v.settled) {
		v.spans <- [2]int{v.from, len(v.settled)}
		v.from = len(v.settled)
	}
	v.mu.Unlock()
	return v.wait()
}

// stop abandons the read-back (an export that failed) and waits for it to end.
func (v *verifier) stop() {
	v.cancel()
	v.wait()
}

// wait lets the read-back end after what is queued and returns its first failure.
func (v *verifier) wait() error {
	v.once.Do(func() {
		v.mu.Lock()
		v.closed = true
		close(v.spans)
		v.mu.Unlock()
		v.err = <-v.done
	})
	return v.err
}

// verify flushes chunks [from, to) to the device, drops their cached pages and reads them
// back, jobs at a time.
func (v *verifier) verify(from, to int) error {
	f := v.t.f
	start, _ := v.m.ChunkRange(from)
	last, n := v.m.ChunkRange(to - 1)
	fd := int(f.Fd())
	if err := unix.SyncFileRange(fd, start, last+n-start, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil {
		// Not every file system can; the pages then stay until the final fsync, and are
		// dropped after it.
		if err := f.Sync(); err != nil {
			return &SourceError{f.Name(), fmt.Errorf("flush: %w", err)}
		}
	}
	unix.Fadvise(fd, start, last+n-start, unix.FADV_DONTNEED)
	g, gctx := errgroup.WithContext(v.ctx)
	next := make(chan int)
	g.Go(func() error {
		defer close(next)
		for i := from; i < to; i++ {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for _, buf := range v.bufs {
		g.Go(func() error {
			for i := range next {
				if err := v.check(i, buf); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// read reads n bytes at off into buf: with O_DIRECT where the target's file system takes it
// (straight from the device into buf, no copy through the page cache, and no doubt the bytes
// came from the device), else through the page cache, whose pages of the range were dropped.
func (v *verifier) read(buf []byte, off, n int64) error {
	if v.direct != nil {
		// O_DIRECT moves whole blocks: the length is rounded up, and the disk's end may
		// make the read short.
		got, err := v.direct.ReadAt(buf[:(n+directAlign-1)/directAlign*directAlign], off)
		if int64(got) >= n {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		// A range the file system will not read directly: through the page cache.
	}
	_, err := v.t.f.ReadAt(buf[:n], off)
	return err
}

// directAlign is the alignment of O_DIRECT reads: of their buffers, offsets and lengths (a
// chunk's offset is a multiple of the chunk size, itself of 4 KiB).
const directAlign = 4096

// alignedBuf returns a buffer of n bytes (rounded up to directAlign) whose start is aligned
// for O_DIRECT.
func alignedBuf(n int64) []byte {
	n = (n + directAlign - 1) / directAlign * directAlign
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+int(n)]
}

// check reads chunk i back and checks it. Chunks outside the export were marked settled at the
// start and are skipped.
func (v *verifier) check(i int, buf []byte) error {
	v.mu.Lock()
	skip := v.in != nil && !v.in[i] || v.checked[i]
	v.mu.Unlock()
	if skip {
		return nil
	}
	f, m := v.t.f, v.m
	off, n := m.ChunkRange(i)
	id := m.Chunks[i]
	if id.IsZero() && v.t.isHole(off, n) {
		return nil // the file system's own map says it reads as zeros
	}
	if err := v.read(buf, off, n); err != nil {
		return &SourceError{f.Name(), fmt.Errorf("read back at %d: %w", off, err)}
	}
	if id.IsZero() && !isZero(buf[:n]) || !id.IsZero() && m.Hash.Sum(buf[:n]) != id {
		return &SourceError{f.Name(), fmt.Errorf("%w: chunk %d at offset %d does not hold what was written", ErrVerify, i, off)}
	}
	return nil
}
