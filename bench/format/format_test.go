package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	zeebo "github.com/zeebo/blake3"

	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/store"
)

const (
	// sampleSize is the disk the hash and compression benchmarks read.
	sampleSize = 256 << 20
	// changeSize is the disk the change-cost benchmarks change: four times the sample, so that
	// even 4 MiB chunks number 256 and the counts of changed chunks are steady.
	changeSize = 1 << 30
	// changedFraction of the 4 KiB blocks change between two versions.
	changedFraction = 0.01
	// filesSize is how much of GOROOT's files BenchmarkCompressFiles reads.
	filesSize = 64 << 20
)

// chunkSizes are the sizes compared: the candidates 256 KiB, 1 MiB and 4 MiB, 512 KiB between
// them, and 64 KiB, the smallest chunk a manifest allows.
var chunkSizes = []int{64 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20}

var hashes = []struct {
	name string
	sum  func([]byte) manifest.ID
}{
	{"blake3", manifest.BLAKE3.Sum}, // lukechampine.com/blake3, what tms uses
	{"blake3-zeebo", func(b []byte) manifest.ID { return manifest.ID(zeebo.Sum256(b)) }},
	{"sha256", manifest.SHA256.Sum}, // crypto/sha256 (SHA-NI where the CPU has it)
}

var levels = []struct {
	name  string
	level zstd.EncoderLevel
}{
	{"fastest", zstd.SpeedFastest},
	{"default", zstd.SpeedDefault},
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// sampleDisk is the 256 MiB sample disk, made once per run and kept in memory.
var sampleDisk = sync.OnceValues(func() ([]byte, error) {
	return writeDisk(sampleSize, 1, func(string) error { return nil })
})

// changeDisks are a 1 GiB sample disk and changed copies of it.
type changeDisks struct {
	base     []byte
	variants []changed
}

// changed is a copy of the base disk with some blocks overwritten.
type changed struct {
	name  string
	disk  []byte
	bytes int64 // bytes overwritten
}

var changeSet = sync.OnceValues(func() (*changeDisks, error) {
	d := &changeDisks{}
	var err error
	d.base, err = writeDisk(changeSize, 2, func(path string) error {
		offs, err := sampledisk.Mutate(path, changedFraction, 3)
		if err != nil {
			return err
		}
		disk, err := os.ReadFile(path)
		d.variants = append(d.variants, changed{"scattered", disk, int64(len(offs)) * sampledisk.BlockSize})
		return err
	})
	if err != nil {
		return nil, err
	}
	n := d.variants[0].bytes
	d.variants = append(d.variants,
		cluster("clustered", d.base, n, 64<<10, 4),
		cluster("clustered-1MiB", d.base, n, 1<<20, 5))
	return d, nil
})

// writeDisk writes a sample disk to a temporary file, reads it back, calls then with the file's
// path and removes the file.
func writeDisk(size int64, seed uint64, then func(path string) error) ([]byte, error) {
	dir, err := os.MkdirTemp("", "tms-bench-format-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.raw")
	if err := sampledisk.Write(path, sampledisk.Options{Size: size, Seed: seed}); err != nil {
		return nil, err
	}
	disk, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return disk, then(path)
}

// cluster returns a copy of disk with about n bytes overwritten with random bytes in runs of run
// bytes, as file writes change a disk. The runs start at random 4 KiB-aligned offsets past the
// partition table and do not overlap.
func cluster(name string, disk []byte, n, run int64, seed uint64) changed {
	out := bytes.Clone(disk)
	rng := rand.New(rand.NewPCG(seed, 0x636c75))
	const first = 1 << 20
	starts := (int64(len(disk))-first-run)/sampledisk.BlockSize + 1
	used := map[int64]bool{} // 4 KiB blocks already overwritten
	runs := n / run
	for made := int64(0); made < runs; {
		start := first + rng.Int64N(starts)*sampledisk.BlockSize
		free := true
		for o := start; o < start+run; o += sampledisk.BlockSize {
			free = free && !used[o]
		}
		if !free {
			continue
		}
		for o := start; o < start+run; o += sampledisk.BlockSize {
			used[o] = true
		}
		for o := start; o < start+run; o += 8 {
			binary.LittleEndian.PutUint64(out[o:], rng.Uint64())
		}
		made++
	}
	return changed{name, out, runs * run}
}

var zeros = make([]byte, slices.Max(chunkSizes))

func isZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

func chunk(disk []byte, cs, i int) []byte { return disk[i*cs : min((i+1)*cs, len(disk))] }

func numChunks(disk []byte, cs int) int { return (len(disk) + cs - 1) / cs }

func mustSample(b *testing.B) []byte {
	b.Helper()
	disk, err := sampleDisk()
	if err != nil {
		b.Fatal(err)
	}
	return disk
}

// meter measures a benchmark loop in CPU time as well as wall time. On a machine that other jobs
// share, wall time stretches with their load while the CPU time the benchmark uses changes much
// less, so cpu_MB/s compares alternatives measured minutes apart more fairly than MB/s does.
type meter struct {
	wall time.Time
	cpu  time.Duration
	n    int // loop iterations
}

func startMeter() *meter { return &meter{wall: time.Now(), cpu: processCPU()} }

// report adds cpu_MB/s (bytes per iteration over CPU seconds of the whole process, all threads)
// and cpu_util (CPU seconds per wall second: 1 is one core kept busy).
func (m *meter) report(b *testing.B, bytes int) {
	cpu, wall := processCPU()-m.cpu, time.Since(m.wall)
	if cpu <= 0 || m.n == 0 {
		return
	}
	b.ReportMetric(float64(bytes)*float64(m.n)/cpu.Seconds()/1e6, "cpu_MB/s")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu_util")
}

// processCPU returns the user and system time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hashAll hashes every chunk of disk with workers goroutines that take chunks in turn, as an
// import's workers do.
func hashAll(disk []byte, cs int, sum func([]byte) manifest.ID, workers int) {
	n := numChunks(disk, cs)
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= n {
				return
			}
			id := sum(chunk(disk, cs, i))
			runtime.KeepAlive(id)
		}
	}
	if workers == 1 {
		work()
		return
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(work)
	}
	wg.Wait()
}

// BenchmarkHash hashes the 256 MiB sample disk chunk by chunk, one chunk at a time. BLAKE3
// implementations may use several cores for one large chunk; SHA-256 uses one.
func BenchmarkHash(b *testing.B) { benchHash(b, 1) }

// BenchmarkHashParallel hashes the sample disk with GOMAXPROCS workers, one chunk each at a
// time, as an import does: the throughput a machine gives when every core is hashing.
func BenchmarkHashParallel(b *testing.B) { benchHash(b, runtime.GOMAXPROCS(0)) }

func benchHash(b *testing.B, workers int) {
	disk := mustSample(b)
	for _, h := range hashes {
		for _, cs := range chunkSizes {
			b.Run(h.name+"/"+sizeName(cs), func(b *testing.B) {
				b.SetBytes(int64(len(disk)))
				m := startMeter()
				for b.Loop() {
					hashAll(disk, cs, h.sum, workers)
					m.n++
				}
				m.report(b, len(disk))
			})
		}
	}
}

// packed is a disk's stored form at one chunk size and level.
type packed struct {
	chunks      [][]byte // the chunks that are not all zero, which are stored
	frames      [][]byte // their zstd frames
	raw, stored int64    // bytes of chunks and of frames
}

// packedCache keeps each packed form for both the compression and the decompression benchmarks.
var packedCache = struct {
	sync.Mutex
	m map[string]*packed
}{m: map[string]*packed{}}

// pack returns the stored form of disk, which name names, at chunk size cs and level.
func pack(name string, disk []byte, cs int, level zstd.EncoderLevel) *packed {
	key := fmt.Sprint(name, cs, level)
	packedCache.Lock()
	defer packedCache.Unlock()
	if p := packedCache.m[key]; p != nil {
		return p
	}
	codec := store.NewCodec(level)
	p := &packed{}
	for i := range numChunks(disk, cs) {
		c := chunk(disk, cs, i)
		if isZero(c) {
			continue
		}
		f := codec.Compress(nil, c)
		p.chunks = append(p.chunks, c)
		p.frames = append(p.frames, f)
		p.raw += int64(len(c))
		p.stored += int64(len(f))
	}
	packedCache.m[key] = p
	return p
}

// BenchmarkCompress compresses every stored chunk of the sample disk with the store's codec.
// MB/s counts bytes of the whole disk, zero chunks included, so that chunk sizes compare fairly
// (larger chunks store fewer all-zero chunks); it is for one core. It reports the compression
// ratio (bytes of stored chunks ÷ bytes of their frames), the bytes of the stored chunks and of
// their frames (what the disk takes in the store), and how many objects it makes.
func BenchmarkCompress(b *testing.B) {
	benchCompress(b, "sample", mustSample(b), chunkSizes)
}

// BenchmarkCompressFiles is BenchmarkCompress over real files instead of a sample disk: the first
// 64 MiB of the Go installation's files (source, binaries, test data) back to back, at the
// candidate chunk sizes. The result depends on the Go version that runs it.
func BenchmarkCompressFiles(b *testing.B) {
	files, err := goFiles(filesSize)
	if err != nil {
		b.Fatal(err)
	}
	benchCompress(b, "goroot", files, []int{256 << 10, 1 << 20, 4 << 20})
}

func benchCompress(b *testing.B, name string, disk []byte, sizes []int) {
	for _, l := range levels {
		for _, cs := range sizes {
			b.Run(l.name+"/"+sizeName(cs), func(b *testing.B) {
				p := pack(name, disk, cs, l.level)
				codec := store.NewCodec(l.level)
				scratch := make([]byte, 0, cs+cs/8+64)
				b.SetBytes(int64(len(disk)))
				m := startMeter()
				for b.Loop() {
					for _, c := range p.chunks {
						scratch = codec.Compress(scratch[:0], c)
					}
					m.n++
				}
				m.report(b, len(disk))
				b.ReportMetric(float64(p.raw)/float64(p.stored), "ratio")
				b.ReportMetric(float64(p.raw)/(1<<20), "raw_MiB")
				b.ReportMetric(float64(p.stored)/(1<<20), "stored_MiB")
				b.ReportMetric(float64(len(p.frames)), "objects")
			})
		}
	}
}

// goFiles returns up to n bytes of the regular files under GOROOT (as `go env GOROOT` says), in
// walk order.
func goFiles(n int) ([]byte, error) {
	env, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	goroot := strings.TrimSpace(string(env))
	out := make([]byte, 0, n)
	err = filepath.WalkDir(goroot, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || len(out) == n {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out = append(out, data[:min(len(data), n-len(out))]...)
		return nil
	})
	if err == nil && len(out) < n {
		err = fmt.Errorf("GOROOT %s holds only %d bytes of files", goroot, len(out))
	}
	return out, err
}

// BenchmarkDecompress decompresses every stored chunk of the sample disk, as an export or a
// terminal's pull does. MB/s counts bytes of the whole disk, as for BenchmarkCompress, on one
// core.
func BenchmarkDecompress(b *testing.B) {
	disk := mustSample(b)
	for _, l := range levels {
		for _, cs := range chunkSizes {
			b.Run(l.name+"/"+sizeName(cs), func(b *testing.B) {
				p := pack("sample", disk, cs, l.level)
				codec := store.NewCodec(l.level)
				buf := make([]byte, cs)
				for i, f := range p.frames {
					out, err := codec.Decompress(buf, f, cs)
					if err != nil || !bytes.Equal(out, p.chunks[i]) {
						b.Fatalf("chunk %d does not survive compression: %v", i, err)
					}
				}
				b.SetBytes(int64(len(disk)))
				m := startMeter()
				for b.Loop() {
					for _, f := range p.frames {
						out, err := codec.Decompress(buf, f, cs)
						if err != nil {
							b.Fatal(err)
						}
						buf = out
					}
					m.n++
				}
				m.report(b, len(disk))
				b.ReportMetric(float64(p.raw)/float64(p.stored), "ratio")
			})
		}
	}
}

// dirPutCopies is how many times BenchmarkDirPut stores the sample disk's chunks (under different
// ids) in one batch, so that the batch is about as large as the 512 MiB an import commits at once.
const dirPutCopies = 4

// BenchmarkDirPut stores the sample disk's chunks, compressed at SpeedFastest, four times over
// under different ids, in one batch of a directory store whose fan-out directories exist, with
// as many writers as an import has, and reports objects/s: the per-object cost of a local
// store, which smaller chunks pay more often. MB/s counts bytes of the disks stored, zero chunks
// included. It measures the file system under TMPDIR as much as tms, and other jobs writing to
// the same disk disturb it.
func BenchmarkDirPut(b *testing.B) {
	disk := mustSample(b)
	ctx := context.Background()
	for _, cs := range []int{256 << 10, 1 << 20, 4 << 20} {
		b.Run(sizeName(cs), func(b *testing.B) {
			p := pack("sample", disk, cs, zstd.SpeedFastest)
			ids := make([]manifest.ID, len(p.chunks))
			for i, c := range p.chunks {
				ids[i] = manifest.BLAKE3.Sum(c)
			}
			b.SetBytes(dirPutCopies * int64(len(disk)))
			for b.Loop() {
				b.StopTimer()
				dir, err := os.MkdirTemp("", "tms-bench-dir-")
				if err != nil {
					b.Fatal(err)
				}
				be, err := store.NewDir(filepath.Join(dir, "store"))
				if err != nil {
					b.Fatal(err)
				}
				w := store.New(be, store.Options{}).NewChunkWriter()
				// Create the 256 fan-out directories first: a store in use has them.
				for i := range 256 {
					if err := w.PutRaw(ctx, manifest.ID{byte(i), 1}, []byte{0}); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range 2 * runtime.GOMAXPROCS(0) { // as many as an import's workers
					wg.Go(func() {
						for {
							j := int(next.Add(1)) - 1
							if j >= dirPutCopies*len(p.frames) {
								return
							}
							k, i := j/len(p.frames), j%len(p.frames)
							id := ids[i]
							id[manifest.IDLen-1] ^= byte(k)
							if err := w.PutRaw(ctx, id, p.frames[i]); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				if err := w.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			n := dirPutCopies * len(p.frames)
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "objects/s")
			b.ReportMetric(float64(n), "objects")
		})
	}
}

// delta is what a new version adds to a store that holds its parent.
type delta struct {
	changed int   // chunk positions whose id changed
	bytes   int64 // compressed bytes of the new chunks among them
}

// chunkIDs hashes every chunk of disk that is not all zero, as an import does.
func chunkIDs(disk []byte, cs int) []manifest.ID {
	ids := make([]manifest.ID, numChunks(disk, cs))
	for i := range ids {
		if c := chunk(disk, cs, i); !isZero(c) {
			ids[i] = manifest.BLAKE3.Sum(c)
		}
	}
	return ids
}

// newChunks returns what importing disk, whose chunk ids are ids, adds to a store that holds
// its parent: the chunks whose ids changed, and the zstd frames (SpeedFastest) of the new ones.
func newChunks(disk []byte, cs int, ids, parent []manifest.ID) delta {
	have := make(map[manifest.ID]bool, len(parent))
	for _, id := range parent {
		have[id] = true
	}
	codec := store.NewCodec(zstd.SpeedFastest)
	scratch := make([]byte, 0, cs+cs/8+64)
	var d delta
	for i, id := range ids {
		if id == parent[i] {
			continue
		}
		d.changed++
		if id.IsZero() || have[id] {
			continue
		}
		have[id] = true
		scratch = codec.Compress(scratch[:0], chunk(disk, cs, i))
		d.bytes += int64(len(scratch))
	}
	return d
}

// BenchmarkChangeCost imports a 1 GiB sample disk after 1% of its 4 KiB blocks changed, over
// the version before, and reports what the new version costs: how many chunks changed, their
// compressed bytes (delta_bytes, at zstd SpeedFastest), and delta_ratio, delta bytes ÷ bytes
// that changed. The changed bytes are random, so a perfect format would have a delta_ratio of
// about 1; the excess is the unchanged bytes that travel with each changed block. The time is
// that of hashing the changed disk to find its changed chunks (with tms's BLAKE3); compressing
// the new chunks, done once outside the timer, adds what BenchmarkCompress gives for their
// bytes.
//
// scattered: sampledisk.Mutate, 1% of blocks at random. clustered: the same number of bytes in
// runs of 64 KiB at random 4 KiB-aligned offsets, as file writes change a disk; clustered-1MiB:
// the same in runs of 1 MiB, as large files (updates, installers) do.
func BenchmarkChangeCost(b *testing.B) {
	d, err := changeSet()
	if err != nil {
		b.Fatal(err)
	}
	parents := map[int][]manifest.ID{}
	for _, v := range d.variants {
		for _, cs := range chunkSizes {
			b.Run(v.name+"/"+sizeName(cs), func(b *testing.B) {
				parent := parents[cs]
				if parent == nil {
					parent = chunkIDs(d.base, cs)
					parents[cs] = parent
				}
				var ids []manifest.ID
				b.SetBytes(int64(len(v.disk)))
				for b.Loop() {
					ids = chunkIDs(v.disk, cs)
				}
				r := newChunks(v.disk, cs, ids, parent)
				n := len(parent)
				b.ReportMetric(float64(r.changed), "changed_chunks")
				b.ReportMetric(float64(r.changed)/float64(n), "changed_frac")
				if v.name == "scattered" {
					b.ReportMetric(1-math.Pow(1-changedFraction, float64(cs/sampledisk.BlockSize)), "expected_frac")
				}
				b.ReportMetric(float64(r.bytes), "delta_bytes")
				b.ReportMetric(float64(r.bytes)/float64(v.bytes), "delta_ratio")
			})
		}
	}
}

// BenchmarkManifest encodes and decodes the manifest of a full 1 GiB disk (no zero chunks) and
// reports its size: the per-chunk overhead every version pays whatever changed.
func BenchmarkManifest(b *testing.B) {
	const disk = 1 << 30
	for _, cs := range chunkSizes {
		b.Run(sizeName(cs), func(b *testing.B) {
			m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, DiskSize: disk, ChunkSize: int64(cs),
				Meta:   manifest.Meta{Name: "bench", Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
				Chunks: make([]manifest.ID, manifest.NumChunks(disk, int64(cs)))}
			rng := rand.New(rand.NewPCG(uint64(cs), 0))
			for i := range m.Chunks {
				for j := 0; j < manifest.IDLen; j += 8 {
					binary.LittleEndian.PutUint64(m.Chunks[i][j:], rng.Uint64())
				}
			}
			var enc []byte
			for b.Loop() {
				var err error
				if enc, err = manifest.Encode(m); err != nil {
					b.Fatal(err)
				}
				if _, err := manifest.Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(enc)), "manifest_B/GiB")
			b.ReportMetric(float64(len(m.Chunks)), "chunks/GiB")
			b.ReportMetric(float64(len(enc))/float64(len(m.Chunks)), "B/chunk")
		})
	}
}

// TestBLAKE3Implementations checks that zeebo/blake3 and lukechampine.com/blake3 (which tms uses)
// give the same digests, so that choosing between them is a matter of speed, not of format.
func TestBLAKE3Implementations(t *testing.T) {
	data := make([]byte, 4<<20+3)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, n := range []int{0, 1, 63, 64, 65, 1023, 1024, 1025, 16 << 10, 64<<10 + 1, 1 << 20, len(data)} {
		if a, b := manifest.BLAKE3.Sum(data[:n]), manifest.ID(zeebo.Sum256(data[:n])); a != b {
			t.Errorf("%d bytes: lukechampine.com/blake3 gives %s, zeebo/blake3 %s", n, a, b)
		}
	}
}
