package imageio_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tms/imageio"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
	"tms/transfer"
)

// TestPackedStoreRoundTrip imports, exports, copies and collects through directory stores
// that write packs, as tms and the region's server use them.
func TestPackedStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, d := storetest.PackDir(t)
	src := storetest.SampleDisk(t, 24*mib, 7)
	res := storetest.Import(t, s, src, "lab")
	if ents, _ := os.ReadDir(filepath.Join(d.Root(), "chunks")); len(ents) != 0 {
		t.Errorf("%d chunk directories in a store that writes packs", len(ents))
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := imageio.Export(ctx, s, res.Version, out, imageio.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, src) {
		t.Fatal("exported disk differs from the source")
	}
	// The same disk again adds nothing.
	again := storetest.Import(t, s, src, "lab")
	if again.Stats.AddedChunks != 0 {
		t.Errorf("reimport added %d chunks", again.Stats.AddedChunks)
	}
	// A copy into another packed store checks out.
	dst, _ := storetest.PackDir(t)
	if _, err := transfer.Copy(ctx, transfer.StoreSource{S: s}, dst, res.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if rep, err := dst.Verify(ctx, 2, nil); err != nil || len(rep.Problems) != 0 || rep.Versions != 1 {
		t.Fatalf("copy: %+v, %v", rep, err)
	}
	// A damaged frame is refused and named, on export and on copy.
	var victim manifest.ID
	for _, id := range res.Version.Manifest.Chunks[3:] {
		if !id.IsZero() {
			victim = id
			break
		}
	}
	storetest.SpoilChunk(t, d, victim)
	if _, err := imageio.Export(ctx, s, res.Version, filepath.Join(t.TempDir(), "out2"), imageio.ExportOptions{}); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("export of a damaged chunk: %v", err)
	}
	third, _ := storetest.PackDir(t)
	if _, err := transfer.Copy(ctx, transfer.StoreSource{S: s}, third, res.Version.ID, transfer.Options{}); !errors.Is(err, transfer.ErrSourceCorrupt) {
		t.Fatalf("copy of a damaged chunk: %v", err)
	}
	// Removing the image and collecting frees every pack.
	ref, _ := manifest.ParseRef("lab")
	if _, err := s.Remove(ctx, ref); err != nil {
		t.Fatal(err)
	}
	gc, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gc.KeptChunks != 0 || gc.FreedChunks == 0 || gc.RemovedPacks == 0 {
		t.Errorf("gc after removing everything: %+v", gc)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.Root(), "packs")); len(ents) != 0 {
		t.Errorf("%d packs left after removing everything", len(ents))
	}
}
