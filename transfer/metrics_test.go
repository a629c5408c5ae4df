package transfer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"tms/internal/promtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/metrics"
	"tms/store"
	"tms/transfer"
)

// TestPeerPullCountsBytesAndChunks checks that a peer pull counts its bytes on both sides (the
// serving Handler's peer bytes out, the copy's peer bytes in) and each chunk it kept.
func TestPeerPullCountsBytesAndChunks(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 6), "lab")
	ma, mb := metrics.NewRegion(metrics.RegionSources{}), metrics.NewRegion(metrics.RegionSources{})
	base := peerWithMeter(t, a, ma.Flow(metrics.PathPeer, metrics.Out))
	src := &transfer.HTTPSource{Base: base, Version: v.Version.ID, Grant: grantFor(t, v.Version.ID)}
	res, err := transfer.Copy(ctx, src, b, v.Version.ID, transfer.Options{Meter: mb.Flow(metrics.PathPeer, metrics.In)})
	if err != nil {
		t.Fatal(err)
	}
	fa, fb := promtest.Gather(t, ma.Registry()), promtest.Gather(t, mb.Registry())
	if got := promtest.Value(fb, "tms_transfer_bytes_total", "path", "peer", "direction", "in"); got != float64(res.MovedBytes) || got == 0 {
		t.Errorf("peer bytes in = %v, the copy moved %d", got, res.MovedBytes)
	}
	if got := promtest.Value(fa, "tms_transfer_bytes_total", "path", "peer", "direction", "out"); got != float64(res.MovedBytes) {
		t.Errorf("peer bytes out = %v, the copy moved %d", got, res.MovedBytes)
	}
	if got := promtest.Value(fb, "tms_chunks_verified_total", "path", "peer"); got != float64(res.Moved) {
		t.Errorf("chunks verified = %v, the copy moved %d", got, res.Moved)
	}
	// Pulling again moves nothing, and counts nothing.
	if _, err := transfer.Copy(ctx, src, b, v.Version.ID, transfer.Options{Meter: mb.Flow(metrics.PathPeer, metrics.In)}); err != nil {
		t.Fatal(err)
	}
	if got := promtest.Value(promtest.Gather(t, mb.Registry()), "tms_chunks_verified_total", "path", "peer"); got != float64(res.Moved) {
		t.Errorf("a second pull of a present version counted chunks: %v", got)
	}
}

// TestRefusedChunksAreCountedByReason checks that a chunk that is no zstd frame counts as
// bad_frame and one whose frame is another chunk's counts as hash_mismatch, on the copy's path.
func TestRefusedChunksAreCountedByReason(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spoil  func(frame, other []byte) []byte
		reason string
	}{
		{"not a zstd frame", func([]byte, []byte) []byte { return []byte("not a zstd frame") }, metrics.ReasonBadFrame},
		{"another chunk's frame", func(_, o []byte) []byte { return o }, metrics.ReasonHashMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a, adir := storetest.Dir(t)
			b, _ := storetest.Dir(t)
			v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 3), "lab")
			var ids []manifest.ID
			for _, id := range v.Version.Manifest.Chunks {
				if !id.IsZero() && (len(ids) == 0 || ids[len(ids)-1] != id) {
					ids = append(ids, id)
				}
			}
			if len(ids) < 2 {
				t.Fatal("the sample disk has fewer than two chunks")
			}
			p := filepath.Join(adir, store.ChunkKey(ids[0]))
			frame, _ := os.ReadFile(p)
			other, _ := os.ReadFile(filepath.Join(adir, store.ChunkKey(ids[1])))
			os.WriteFile(p, tc.spoil(frame, other), 0o644)

			m := metrics.NewRegion(metrics.RegionSources{})
			_, err := transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v.Version.ID, transfer.Options{Meter: m.Flow(metrics.PathRelay, metrics.In)})
			if !errors.Is(err, transfer.ErrSourceCorrupt) {
				t.Fatalf("copy with a spoiled chunk: %v", err)
			}
			fams := promtest.Gather(t, m.Registry())
			if got := promtest.Value(fams, "tms_chunks_refused_total", "path", "relay", "reason", tc.reason); got != 1 {
				t.Errorf("refused for %s: %v, want 1", tc.reason, got)
			}
			if got := promtest.Value(fams, "tms_chunks_refused_total"); got != 1 {
				t.Errorf("refused in all: %v, want 1", got)
			}
		})
	}
}
