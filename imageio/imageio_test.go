package imageio_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"tms/internal/storetest"

	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/store"
)

const mib = 1 << 20

func resolve(t *testing.T, s *store.Store, ref string) *store.Version {
	t.Helper()
	r, err := manifest.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestImportExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 48*mib+4096, 1)
	res := storetest.Import(t, s, src, "lab")
	if res.Zero == 0 || res.Distinct == 0 || res.Stats.AddedChunks != res.Distinct {
		t.Fatalf("unexpected counts %+v", res)
	}
	if pt := res.Version.Manifest.Meta.Partitions; pt == nil || pt.Scheme != "gpt" || len(pt.Partitions) != 2 {
		t.Fatalf("partition table not summarised: %+v", pt)
	}
	v := resolve(t, s, "lab")
	out := filepath.Join(t.TempDir(), "out.raw")
	er, err := imageio.Export(ctx, s, v, out, imageio.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("exported disk differs from the source")
	}
	if er.Zero == 0 {
		t.Fatal("no zero chunks seen")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated >= v.Manifest.DiskSize-er.Zero*imageio.DefaultChunkSize/2 {
		t.Errorf("zero chunks were written, not left as holes: %d of %d bytes allocated", allocated, v.Manifest.DiskSize)
	}

	// Exporting again over the same file writes nothing.
	er, err = imageio.Export(ctx, s, v, out, imageio.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if er.Written != 0 {
		t.Errorf("second export wrote %d chunks, want 0", er.Written)
	}

	// Over a damaged copy it writes just the damaged chunks, and punches holes where zeros belong.
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("damage"), 5*mib+10)
	f.WriteAt([]byte("damage"), 20*mib+10)
	f.Truncate(30 * mib)
	f.Close()
	er, err = imageio.Export(ctx, s, v, out, imageio.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("repaired export differs from the source")
	}
	want := 2 + int64(len(v.Manifest.Chunks)) - 30*mib/imageio.DefaultChunkSize
	if er.Written > want {
		t.Errorf("repair wrote %d chunks, want at most %d", er.Written, want)
	}
}

func TestIncrementalImportAddsOnlyTouchedChunks(t *testing.T) {
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 64*mib, 2)
	first := storetest.Import(t, s, src, "lab")
	offs, err := sampledisk.Mutate(src, 0.002, 3)
	if err != nil {
		t.Fatal(err)
	}
	touched := map[int64]bool{}
	for _, o := range offs {
		touched[o/imageio.DefaultChunkSize] = true
	}
	second := storetest.Import(t, s, src, "lab")
	if second.Unchanged || second.Version.Manifest.Parent != first.Version.ID {
		t.Fatalf("second version does not chain to the first: %+v", second.Version.Manifest.Parent)
	}
	if second.Stats.AddedChunks > int64(len(touched)) {
		t.Errorf("added %d chunks, but only %d were touched", second.Stats.AddedChunks, len(touched))
	}
	// The added bytes are exactly the stored size of the new chunks that the change touched.
	var want int64
	for i := range touched {
		id := second.Version.Manifest.Chunks[i]
		if id == first.Version.Manifest.Chunks[i] || id.IsZero() {
			continue
		}
		n, err := s.StatChunk(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		want += n
	}
	if second.Stats.AddedBytes > want {
		t.Errorf("added %d bytes, the touched chunks hold %d", second.Stats.AddedBytes, want)
	}
	got, err := s.GetStats(context.Background(), second.Version.ID)
	if err != nil || got != second.Stats {
		t.Errorf("stats not saved with the version: %+v, %v", got, err)
	}

	third := storetest.Import(t, s, src, "lab")
	if !third.Unchanged || third.Stats.AddedBytes != 0 || third.Version.ID != second.Version.ID {
		t.Errorf("importing the same disk again: unchanged=%v added=%d", third.Unchanged, third.Stats.AddedBytes)
	}
}

func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptChunkIsNamed(t *testing.T) {
	ctx := context.Background()
	s, dir := storetest.Dir(t)
	src := storetest.SampleDisk(t, 16*mib, 4)
	res := storetest.Import(t, s, src, "lab")
	other := storetest.Import(t, s, storetest.SampleDisk(t, 8*mib, 5), "other")
	var victim manifest.ID
	for _, id := range res.Version.Manifest.Chunks[2:] {
		if !id.IsZero() {
			victim = id
			break
		}
	}
	flipByte(t, filepath.Join(dir, store.ChunkKey(victim)))

	_, err := imageio.Export(ctx, s, res.Version, filepath.Join(t.TempDir(), "out"), imageio.ExportOptions{})
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("export error %v: want ErrCorrupt naming %s", err, victim.Short())
	}
	rep, err := s.Verify(ctx, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].String(), victim.String()) ||
		!strings.Contains(rep.Problems[0].String(), "lab@") {
		t.Fatalf("verify problems %v: want one naming chunk %s and image lab", rep.Problems, victim.Short())
	}
	// Nothing else is harmed: the other image still exports.
	out := filepath.Join(t.TempDir(), "other")
	if _, err := imageio.Export(ctx, s, other.Version, out, imageio.ExportOptions{}); err != nil {
		t.Fatalf("other image harmed: %v", err)
	}
}

func TestTruncatedAndMissingChunks(t *testing.T) {
	ctx := context.Background()
	s, dir := storetest.Dir(t)
	res := storetest.Import(t, s, storetest.SampleDisk(t, 16*mib, 6), "lab")
	var ids []manifest.ID
	for _, id := range res.Version.Manifest.Chunks[1:] {
		if !id.IsZero() {
			ids = append(ids, id)
		}
	}
	truncated, missing := ids[0], ids[len(ids)-1]
	p := filepath.Join(dir, store.ChunkKey(truncated))
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, store.ChunkKey(missing))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetChunk(ctx, manifest.BLAKE3, truncated, nil); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("truncated chunk: %v, want ErrCorrupt", err)
	}
	if _, err := s.GetChunk(ctx, manifest.BLAKE3, missing, nil); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrCorrupt) {
		t.Errorf("missing chunk: %v, want ErrNotFound", err)
	}
	rep, err := s.Verify(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, p := range rep.Problems {
		kinds = append(kinds, p.String())
	}
	all := strings.Join(kinds, "\n")
	if len(rep.Problems) != 2 || !strings.Contains(all, truncated.String()+": corrupt") || !strings.Contains(all, missing.String()+": missing") {
		t.Fatalf("verify found:\n%s", all)
	}
}

func TestCorruptManifest(t *testing.T) {
	ctx := context.Background()
	s, dir := storetest.Dir(t)
	res := storetest.Import(t, s, storetest.SampleDisk(t, 8*mib, 7), "lab")
	flipByte(t, filepath.Join(dir, "manifests", res.Version.ID.String()))
	r, _ := manifest.ParseRef("lab")
	if _, err := s.Resolve(ctx, r); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("resolve of a corrupt manifest: %v", err)
	}
	if _, err := s.GC(ctx); err == nil || !strings.Contains(err.Error(), "before deleting anything") {
		t.Fatalf("gc with a corrupt manifest: %v, want it to stop", err)
	}
}

func TestInterruptedImportResumes(t *testing.T) {
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 96*mib, 8)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := imageio.Import(ctx, s, src, imageio.ImportOptions{Name: "lab", Jobs: 2, Progress: func(done, total int64) {
		if done > total/2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted import: %v, want context.Canceled", err)
	}
	if tags, _ := s.Tags(context.Background()); len(tags) != 0 {
		t.Fatalf("interrupted import published %v", tags)
	}
	if ids, _ := s.VersionIDs(context.Background()); len(ids) != 0 {
		t.Fatalf("interrupted import left versions %v", ids)
	}
	res := storetest.Import(t, s, src, "lab")
	if res.Stats.AddedChunks >= res.Distinct {
		t.Errorf("resumed import added all %d chunks again", res.Distinct)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := imageio.Export(context.Background(), s, res.Version, out, imageio.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("resumed import exports a different disk")
	}
}

func TestBadTargetsAndSources(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 8*mib, 9)
	res := storetest.Import(t, s, src, "lab")
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)

	cases := map[string]struct {
		err  func() error
		want string
	}{
		"export into a path under a file": {func() error {
			_, err := imageio.Export(ctx, s, res.Version, filepath.Join(notDir, "out"), imageio.ExportOptions{})
			return err
		}, "not a directory"},
		"export to a directory": {func() error {
			_, err := imageio.Export(ctx, s, res.Version, t.TempDir(), imageio.ExportOptions{})
			return err
		}, "is a directory"},
		"import a missing file": {func() error {
			_, err := imageio.Import(ctx, s, filepath.Join(t.TempDir(), "nope"), imageio.ImportOptions{Name: "x"})
			return err
		}, "no such file"},
		"import an empty file": {func() error {
			_, err := imageio.Import(ctx, s, notDir, imageio.ImportOptions{Name: "x"})
			return err
		}, "is empty"},
		"import under a bad name": {func() error {
			_, err := imageio.Import(ctx, s, src, imageio.ImportOptions{Name: "../x"})
			return err
		}, "image name"},
		"import with a bad chunk size": {func() error {
			_, err := imageio.Import(ctx, s, src, imageio.ImportOptions{Name: "x", ChunkSize: 1000})
			return err
		}, "chunk size"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.err()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}

func TestRemoveAndGC(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	a := storetest.Import(t, s, storetest.SampleDisk(t, 8*mib, 10), "a")
	b := storetest.Import(t, s, storetest.SampleDisk(t, 8*mib, 11), "b")

	// gc refuses to run while an import holds the store.
	l, err := s.LockShared(ctx, "test import", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), "test import") {
		t.Fatalf("gc during an import: %v, want ErrBusy naming the import", err)
	}
	l.Release(ctx)

	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.FreedChunks != 0 {
		t.Fatalf("gc freed %d chunks still in use", res.FreedChunks)
	}
	r, _ := manifest.ParseRef("a")
	rm, err := s.Remove(ctx, r)
	if err != nil || len(rm.Versions) != 1 || rm.Versions[0] != a.Version.ID {
		t.Fatalf("remove a: %+v, %v", rm, err)
	}
	res, err = s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.FreedChunks != a.Stats.AddedChunks || res.FreedBytes != a.Stats.AddedBytes {
		t.Errorf("gc freed %d chunks (%d bytes), want %d (%d)", res.FreedChunks, res.FreedBytes, a.Stats.AddedChunks, a.Stats.AddedBytes)
	}
	out := filepath.Join(t.TempDir(), "b")
	if _, err := imageio.Export(ctx, s, b.Version, out, imageio.ExportOptions{}); err != nil {
		t.Fatalf("gc harmed image b: %v", err)
	}
	if _, err := s.Resolve(ctx, r); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed image still resolves: %v", err)
	}
}

func TestNewVersionKeepsParentChunkSizeAndHash(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 8*mib, 12)
	first, err := imageio.Import(ctx, s, src, imageio.ImportOptions{Name: "lab", ChunkSize: mib, Hash: manifest.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	sampledisk.Mutate(src, 0.001, 1)
	second := storetest.Import(t, s, src, "lab")
	m := second.Version.Manifest
	if m.ChunkSize != mib || m.Hash != manifest.SHA256 || m.Parent != first.Version.ID {
		t.Fatalf("second version: chunk size %d, hash %s; want the parent's %d, %s", m.ChunkSize, m.Hash, mib, manifest.SHA256)
	}
	if second.Stats.AddedChunks >= second.Distinct {
		t.Fatalf("second version shares no chunks with its parent")
	}
	other := storetest.Import(t, s, src, "fresh")
	if other.Version.Manifest.ChunkSize != imageio.DefaultChunkSize || other.Version.Manifest.Hash != manifest.DefaultHash {
		t.Fatalf("a new image got %d, %s", other.Version.Manifest.ChunkSize, other.Version.Manifest.Hash)
	}
}

func TestExportVerifiesByReadingBack(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 16*mib, 13)
	res := storetest.Import(t, s, src, "lab")
	out := filepath.Join(t.TempDir(), "out.raw")
	if _, err := imageio.Export(ctx, s, res.Version, out, imageio.ExportOptions{Verify: true}); err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("verified export differs")
	}
}

// lyingGetter serves a chunk whose bytes do not match the manifest, as a disk that does not
// keep what it is given would: the read-back must catch it.
type lyingGetter struct {
	s      *store.Store
	victim manifest.ID
}

func (l lyingGetter) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	b, err := l.s.GetChunk(ctx, h, id, buf)
	if err == nil && id == l.victim {
		b[0] ^= 0xff
	}
	return b, err
}

func TestExportReadBackCatchesBadWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	res := storetest.Import(t, s, storetest.SampleDisk(t, 8*mib, 14), "lab")
	var victim manifest.ID
	for _, id := range res.Version.Manifest.Chunks[4:] {
		if !id.IsZero() {
			victim = id
			break
		}
	}
	_, err := imageio.Export(ctx, lyingGetter{s, victim}, res.Version, filepath.Join(t.TempDir(), "out"), imageio.ExportOptions{Verify: true})
	if !errors.Is(err, imageio.ErrVerify) {
		t.Fatalf("export with a bad write: %v, want ErrVerify", err)
	}
}

// TestExportReadsBackBehindTheWrites exports a disk larger than the stretch the read-back takes
// at a time, so most of it is read back while later chunks are still being written: a bad
// write is caught wherever it is, and a good export verifies.
func TestExportReadsBackBehindTheWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	src := storetest.SampleDisk(t, 160*mib, 15)
	res := storetest.Import(t, s, src, "lab")
	chunks := res.Version.Manifest.Chunks
	out := filepath.Join(t.TempDir(), "out.raw")
	got, err := imageio.Export(ctx, s, res.Version, out, imageio.ExportOptions{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("verified export differs")
	}
	if got.VerifyTotal <= 0 {
		t.Errorf("no time spent reading back: %+v", got)
	}
	firstNonZero := func(from int) manifest.ID {
		for _, id := range chunks[from:] {
			if !id.IsZero() {
				return id
			}
		}
		t.Fatal("no non-zero chunk")
		return manifest.ID{}
	}
	for _, tc := range []struct {
		name string
		at   int
	}{
		{"in the first stretch", 4},
		{"in the last stretch", len(chunks) - 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			victim := firstNonZero(tc.at)
			_, err := imageio.Export(ctx, lyingGetter{s, victim}, res.Version, filepath.Join(t.TempDir(), "out"), imageio.ExportOptions{Verify: true})
			if !errors.Is(err, imageio.ErrVerify) {
				t.Fatalf("export with a bad write: %v, want ErrVerify", err)
			}
		})
	}
}
