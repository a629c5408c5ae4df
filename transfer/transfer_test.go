package transfer_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"tms/internal/storetest"

	"tms/imageio"
	"tms/internal/miniotest"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/store"
	"tms/store/s3store"
	"tms/transfer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	miniotest.StopShared()
	os.Exit(code)
}

const mib = 1 << 20

func exportSum(t *testing.T, s *store.Store, v *store.Version) [32]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	if _, err := imageio.Export(context.Background(), s, v, out, imageio.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestCopyMovesOnlyMissingChunks(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	disk := storetest.SampleDisk(t, 32*mib, 1)
	v1 := storetest.Import(t, a, disk, "lab")

	res, err := transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v1.Version.ID, transfer.Options{Tag: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved != v1.Distinct || res.MovedBytes != v1.Stats.StoredBytes || res.Present != 0 {
		t.Fatalf("first copy moved %d chunks (%d bytes), want %d (%d)", res.Moved, res.MovedBytes, v1.Distinct, v1.Stats.StoredBytes)
	}
	r, _ := manifest.ParseRef("lab")
	got, err := b.Resolve(ctx, r)
	if err != nil || got.ID != v1.Version.ID {
		t.Fatalf("tag not set in the destination: %v", err)
	}
	if exportSum(t, b, got) != storetest.FileSum(t, disk) {
		t.Fatal("copied version exports a different disk")
	}

	// Version N+1 moves only the chunks that changed.
	offs, err := sampledisk.Mutate(disk, 0.002, 2)
	if err != nil {
		t.Fatal(err)
	}
	v2 := storetest.Import(t, a, disk, "lab")
	res, err = transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v2.Version.ID, transfer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedBytes > v2.Stats.AddedBytes*12/10 {
		t.Fatalf("copy of N+1 moved %d bytes; the %d changed blocks made %d bytes of new chunks", res.MovedBytes, len(offs), v2.Stats.AddedBytes)
	}
	res, err = transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v2.Version.ID, transfer.Options{})
	if err != nil || !res.AlreadyHere || res.Moved != 0 {
		t.Fatalf("copying a version that is already there: %+v, %v", res, err)
	}
}

func TestCorruptSourceChunkIsRefused(t *testing.T) {
	ctx := context.Background()
	a, adir := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 3), "lab")
	var victim manifest.ID
	for _, id := range v.Version.Manifest.Chunks[4:] {
		if !id.IsZero() {
			victim = id
			break
		}
	}
	p := filepath.Join(adir, store.ChunkKey(victim))
	frame, _ := os.ReadFile(p)
	frame[len(frame)/2] ^= 0x10
	os.WriteFile(p, frame, 0o644)

	_, err := transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v.Version.ID, transfer.Options{})
	if !errors.Is(err, transfer.ErrSourceCorrupt) || !strings.Contains(err.Error(), victim.String()) {
		t.Fatalf("copy with a corrupt source chunk: %v", err)
	}
	if _, err := b.GetManifest(ctx, v.Version.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a version with a corrupt chunk was published: %v", err)
	}
	if has, _ := b.HasChunk(ctx, victim); has {
		t.Fatal("the corrupt chunk was stored")
	}
	rep, err := b.Verify(ctx, 4, nil)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("destination after a refused copy: %v, %v", rep.Problems, err)
	}
}

func TestInterruptedCopyResumes(t *testing.T) {
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	disk := storetest.SampleDisk(t, 64*mib, 4)
	v := storetest.Import(t, a, disk, "lab")
	ctx, cancel := context.WithCancel(context.Background())
	var first int64
	_, err := transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v.Version.ID, transfer.Options{Jobs: 2, Progress: func(p transfer.Progress) {
		first = p.MovedBytes
		if p.Done*2 > p.Total {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy: %v", err)
	}
	if _, err := b.GetManifest(context.Background(), v.Version.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("an interrupted copy published its manifest")
	}
	res, err := transfer.Copy(context.Background(), transfer.StoreSource{S: a}, b, v.Version.ID, transfer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if total := first + res.MovedBytes; total > v.Stats.StoredBytes*11/10 {
		t.Fatalf("moved %d + %d bytes for a version of %d stored bytes", first, res.MovedBytes, v.Stats.StoredBytes)
	}
	if exportSum(t, b, res.Version) != storetest.FileSum(t, disk) {
		t.Fatal("resumed copy exports a different disk")
	}
}

// A heartbeat's figures must never go backwards, and the callback, called from the copy's
// workers, must not have to lock: this records every call without a lock (the race detector
// sees any overlap) and counts callers inside it at once.
func TestProgressCallsAreSerialAndNeverGoBack(t *testing.T) {
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 32*mib, 6), "lab")
	var inside, overlaps atomic.Int32
	var seen []transfer.Progress
	res, err := transfer.Copy(context.Background(), transfer.StoreSource{S: a}, b, v.Version.ID, transfer.Options{Jobs: 8, Progress: func(p transfer.Progress) {
		if inside.Add(1) > 1 {
			overlaps.Add(1)
		}
		seen = append(seen, p)
		runtime.Gosched() // give another worker the chance to call in now
		inside.Add(-1)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("Progress was called %d times while another call ran", n)
	}
	if int64(len(seen)) != res.Chunks {
		t.Errorf("Progress called %d times for %d chunks", len(seen), res.Chunks)
	}
	for i := 1; i < len(seen); i++ {
		if p, q := seen[i-1], seen[i]; q.Done < p.Done || q.MovedBytes < p.MovedBytes || q.Total != p.Total {
			t.Fatalf("call %d reported %+v after %+v", i, q, p)
		}
	}
	if last := seen[len(seen)-1]; last.Done != res.Chunks || last.Total != res.Chunks || last.MovedBytes != res.MovedBytes {
		t.Fatalf("last call reported %+v; the copy handled %d chunks and moved %d bytes", last, res.Chunks, res.MovedBytes)
	}
}

func TestCopyFromS3(t *testing.T) {
	ctx := context.Background()
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	be, err := s3store.New(ctx, s3store.Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: bucket, Prefix: "central"})
	if err != nil {
		t.Fatal(err)
	}
	central := store.New(be, store.Options{})
	if err := central.Init(ctx); err != nil {
		t.Fatal(err)
	}
	disk := storetest.SampleDisk(t, 16*mib, 5)
	v := storetest.Import(t, central, disk, "lab")
	region, _ := storetest.Dir(t)
	res, err := transfer.Copy(ctx, transfer.StoreSource{S: central}, region, v.Version.ID, transfer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if exportSum(t, region, res.Version) != storetest.FileSum(t, disk) {
		t.Fatal("copy from S3 exports a different disk")
	}
	// And back the other way into a fresh prefix.
	be2, err := s3store.New(ctx, s3store.Config{Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Bucket: bucket, Prefix: "relay"})
	if err != nil {
		t.Fatal(err)
	}
	relay := store.New(be2, store.Options{})
	relay.Init(ctx)
	if _, err := transfer.Copy(ctx, transfer.StoreSource{S: region}, relay, v.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if rep, err := relay.Verify(ctx, 8, nil); err != nil || len(rep.Problems) != 0 || rep.Versions != 1 {
		t.Fatalf("relay store after the copy: %+v, %v", rep, err)
	}
}

// TestCopyAnnouncesEachChunkAndItsCommit checks the callbacks a region serves an arriving
// version by: the manifest before any chunk, every distinct chunk once (nil for one the
// destination held), and every fetched chunk committed, and readable, by the end.
func TestCopyAnnouncesEachChunkAndItsCommit(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	disk := storetest.SampleDisk(t, 16*mib, 1)
	v1 := storetest.Import(t, a, disk, "lab")
	// b holds one chunk already.
	var nonzero []manifest.ID
	for _, c := range v1.Version.Manifest.Chunks {
		if !c.IsZero() {
			nonzero = append(nonzero, c)
		}
	}
	first := nonzero[0]
	frame, err := a.Backend().Get(ctx, store.ChunkKey(first))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Backend().Put(ctx, store.ChunkKey(first), frame); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var sawManifest bool
	arrived := map[manifest.ID]int{}
	held := map[manifest.ID]bool{}
	committed := map[manifest.ID]bool{}
	opts := transfer.Options{
		Manifest: func(ctx context.Context, v *store.Version) error {
			mu.Lock()
			defer mu.Unlock()
			if len(arrived) > 0 || v.ID != v1.Version.ID {
				t.Errorf("Manifest called after chunks or with version %s", v.ID.Short())
			}
			sawManifest = true
			return nil
		},
		Arrived: func(id manifest.ID, frame []byte) {
			mu.Lock()
			defer mu.Unlock()
			if !sawManifest {
				t.Error("a chunk arrived before the manifest was announced")
			}
			arrived[id]++
			held[id] = frame == nil
			if frame != nil {
				if _, err := b.DecodeChunk(v1.Version.Manifest.Hash, id, frame, nil); err != nil {
					t.Errorf("Arrived with a frame that does not check: %v", err)
				}
			}
		},
		Committed: func(ids []manifest.ID) {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				committed[id] = true
				if _, err := b.StatChunk(ctx, id); err != nil {
					t.Errorf("chunk %s committed but not readable: %v", id.Short(), err)
				}
			}
		},
	}
	if _, err := transfer.Copy(ctx, transfer.StoreSource{S: a}, b, v1.Version.ID, opts); err != nil {
		t.Fatal(err)
	}
	if int64(len(arrived)) != v1.Distinct {
		t.Fatalf("%d distinct chunks arrived; the version has %d", len(arrived), v1.Distinct)
	}
	for id, n := range arrived {
		if n != 1 {
			t.Errorf("chunk %s arrived %d times", id.Short(), n)
		}
		if held[id] != (id == first) {
			t.Errorf("chunk %s: held %v; only the first was held", id.Short(), held[id])
		}
		if !held[id] && !committed[id] {
			t.Errorf("chunk %s fetched but never committed", id.Short())
		}
	}

	// A manifest refused stops the copy before a chunk moves.
	c, _ := storetest.Dir(t)
	refused := errors.New("no signature")
	_, err = transfer.Copy(ctx, transfer.StoreSource{S: a}, c, v1.Version.ID, transfer.Options{
		Manifest: func(context.Context, *store.Version) error { return refused }})
	if !errors.Is(err, refused) {
		t.Fatalf("Copy with its manifest refused: %v", err)
	}
	if ok, _ := c.HasChunk(ctx, nonzero[1]); ok {
		t.Fatal("a chunk moved after the manifest was refused")
	}
}
