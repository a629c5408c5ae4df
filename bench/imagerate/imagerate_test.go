// Package imagerate measures import and export of a 2 GiB disk image on the local backend
// against cp of the same file, in the same run. Run it with scripts/bench.
//
// Each iteration times, on the same file system:
//   - cp SRC DST (the kernel's copy into the page cache) and the sync after it;
//   - tms import of SRC into a fresh store, which includes making every chunk durable;
//   - tms export of that version into a new file, which includes fsync of the target.
//
// and reports the tms rates as ratios to cp alone (vs_cp) and to cp followed by sync
// (vs_cp_sync), since tms flushes what it writes and cp does not.
package imagerate

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"tms/imageio"
	"tms/internal/benchutil"
	"tms/internal/sampledisk"
	"tms/store"
)

// cpBaseline copies src to dst with cp and returns the time of cp and of the sync after it.
func cpBaseline(b *testing.B, src, dst string) (cp, cpSync time.Duration) {
	benchutil.Run(b, "sync")
	cp = benchutil.Run(b, "cp", src, dst)
	cpSync = cp + benchutil.Run(b, "sync")
	os.Remove(dst)
	benchutil.Run(b, "sync")
	return cp, cpSync
}

func report(b *testing.B, size int64, tms, cp, cpSync time.Duration) {
	mb := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	b.ReportMetric(mb(tms), "MB/s")
	b.ReportMetric(mb(cp), "cp_MB/s")
	b.ReportMetric(cp.Seconds()/tms.Seconds(), "vs_cp")
	b.ReportMetric(cpSync.Seconds()/tms.Seconds(), "vs_cp_sync")
}

func BenchmarkImageRate(b *testing.B) {
	dir := benchutil.Dir(b)
	size := benchutil.DiskSize(b)
	src := filepath.Join(dir, "disk.raw")
	if err := sampledisk.Write(src, sampledisk.Options{Size: size, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	open := func(path string) *store.Store {
		d, err := store.NewDirWith(path, store.DirOptions{Packs: true})
		if err != nil {
			b.Fatal(err)
		}
		s := store.New(d, store.Options{})
		if err := s.Init(ctx); err != nil {
			b.Fatal(err)
		}
		return s
	}

	b.Run("import", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			cp, cpSync := cpBaseline(b, src, filepath.Join(dir, "cp.raw"))
			s := open(filepath.Join(dir, "store-import-"+strconv.Itoa(i)))
			b.StartTimer()
			start := time.Now()
			if _, err := imageio.Import(ctx, s, src, imageio.ImportOptions{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
			tms := time.Since(start)
			b.StopTimer()
			report(b, size, tms, cp, cpSync)
			os.RemoveAll(filepath.Join(dir, "store-import-"+strconv.Itoa(i)))
			b.StartTimer()
		}
	})

	b.Run("export", func(b *testing.B) {
		b.SetBytes(size)
		s := open(filepath.Join(dir, "store-export"))
		res, err := imageio.Import(ctx, s, src, imageio.ImportOptions{Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		out := filepath.Join(dir, "out.raw")
		b.ResetTimer()
		for b.Loop() {
			b.StopTimer()
			cp, cpSync := cpBaseline(b, src, filepath.Join(dir, "cp.raw"))
			os.Remove(out)
			b.StartTimer()
			start := time.Now()
			if _, err := imageio.Export(ctx, s, res.Version, out, imageio.ExportOptions{}); err != nil {
				b.Fatal(err)
			}
			tms := time.Since(start)
			b.StopTimer()
			report(b, size, tms, cp, cpSync)
			b.StartTimer()
		}
	})
}
