package imageio_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/internal/storetest"
)

// TestExportOnlyWritesTheNamedChunks is an update's write: a target that holds version 1 gets
// version 2 by writing only the chunks whose ids differ (a changed one and one that became all
// zeros), each written without reading first and read back; the chunks not named are not
// touched, not even when they are wrong.
func TestExportOnlyWritesTheNamedChunks(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 16*mib, 21)
	v1 := storetest.Import(t, s, src, "lab").Version
	out := filepath.Join(t.TempDir(), "disk")
	if _, err := imageio.Export(ctx, s, v1, out, imageio.ExportOptions{}); err != nil {
		t.Fatal(err)
	}

	if _, err := sampledisk.Mutate(src, 0.002, 3); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cs := v1.Manifest.ChunkSize
	f.WriteAt(make([]byte, cs), 5*cs) // chunk 5 becomes all zeros
	f.Close()
	v2 := storetest.Import(t, s, src, "lab").Version
	var changed []int
	var changedBytes int64
	zeroChanged := false
	for i := range v2.Manifest.Chunks {
		if v1.Manifest.Chunks[i] != v2.Manifest.Chunks[i] {
			changed = append(changed, i)
			_, n := v2.Manifest.ChunkRange(i)
			changedBytes += n
			if v2.Manifest.Chunks[i].IsZero() {
				zeroChanged = true
			}
		}
	}
	if len(changed) < 2 || len(changed) == len(v2.Manifest.Chunks) || !zeroChanged {
		t.Fatalf("the change touched chunks %v of %d (a zeroed one among them: %v): the test needs a few, one zeroed", changed, len(v2.Manifest.Chunks), zeroChanged)
	}

	var mu sync.Mutex // Progress is called from every worker
	var last, total int64
	res, err := imageio.Export(ctx, s, v2, out, imageio.ExportOptions{Only: changed, Verify: true, FixedSize: true,
		Progress: func(done, all int64) { mu.Lock(); last, total = max(last, done), all; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("the target does not hold version 2")
	}
	if res.Written != int64(len(changed)-1) || res.Skipped != 0 || res.Zero != 1 {
		t.Fatalf("result %+v for %d changed chunks, one of them zero", res, len(changed))
	}
	if last != changedBytes || total != changedBytes {
		t.Fatalf("progress ended at %d of %d, want %d of %d", last, total, changedBytes, changedBytes)
	}

	// A chunk not named is left as it is, even when it is wrong: the caller vouches for it.
	unnamed := int64(-1)
	for i := range v2.Manifest.Chunks {
		if !v2.Manifest.Chunks[i].IsZero() && v1.Manifest.Chunks[i] == v2.Manifest.Chunks[i] {
			unnamed = int64(i)
			break
		}
	}
	f, _ = os.OpenFile(out, os.O_RDWR, 0)
	f.WriteAt([]byte("not the image"), unnamed*cs+10)
	f.Close()
	if _, err := imageio.Export(ctx, s, v2, out, imageio.ExportOptions{Only: changed, Verify: true, FixedSize: true}); err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) == storetest.FileSum(t, src) {
		t.Fatal("an export of some chunks wrote one it was not given")
	}
}

func TestExportOnlyRefusesBadIndexes(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	v := storetest.Import(t, s, storetest.SampleDisk(t, 4*mib, 22), "lab").Version
	out := filepath.Join(t.TempDir(), "disk")
	if _, err := imageio.Export(ctx, s, v, out, imageio.ExportOptions{Only: []int{0}}); err == nil {
		t.Error("an export of some chunks created a new target")
	}
	if _, err := imageio.Export(ctx, s, v, out, imageio.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, only := range map[string][]int{
		"negative": {-1},
		"past end": {len(v.Manifest.Chunks)},
		"twice":    {1, 1},
	} {
		if _, err := imageio.Export(ctx, s, v, out, imageio.ExportOptions{Only: only}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
