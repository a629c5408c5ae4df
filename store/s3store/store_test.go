package s3store

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"tms/internal/miniotest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
)

// The store on S3, end to end.
func TestStoreOnS3(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	b := open(t, config(srv, bucket, "school/lab1"))
	s := store.New(b, store.Options{})
	ctx := t.Context()

	if err := s.Check(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Check of an empty prefix = %v, want ErrNotFound", err)
	}
	if err := s.Init(ctx); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after Init: %v", err)
	}
	if err := s.Init(ctx); err != nil {
		t.Fatalf("second Init: %v", err)
	}

	h := manifest.BLAKE3
	data := bytes.Repeat([]byte("tms chunk "), 100_000) // 1 MB that compresses
	copy(data, randomBytes(4096))
	id := h.Sum(data)
	other := h.Sum([]byte("never stored"))

	if ok, err := s.HasChunk(ctx, id); err != nil || ok {
		t.Fatalf("HasChunk before Put = %v, %v; want false", ok, err)
	}
	w := s.NewChunkWriter()
	n, err := w.Put(ctx, id, data, nil)
	if err != nil {
		t.Fatalf("ChunkWriter.Put: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if n <= 0 || n >= int64(len(data)) {
		t.Errorf("stored size %d of a %d byte chunk that compresses well", n, len(data))
	}
	if size, err := s.StatChunk(ctx, id); err != nil || size != n {
		t.Errorf("StatChunk = %d, %v; want %d", size, err, n)
	}
	got, err := s.GetChunk(ctx, h, id, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetChunk = %d bytes, %v; want the chunk put", len(got), err)
	}
	if ok, err := s.HasChunk(ctx, id); err != nil || !ok {
		t.Fatalf("HasChunk of a stored chunk = %v, %v", ok, err)
	}
	if ok, err := s.HasChunk(ctx, other); err != nil || ok {
		t.Fatalf("HasChunk of a chunk never stored = %v, %v", ok, err)
	}
	if _, err := s.GetChunk(ctx, h, other, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetChunk of a chunk never stored = %v, want ErrNotFound", err)
	}

	// The chunk is where the layout says, under the prefix.
	raw := srv.Client(t)
	name := "school/lab1/" + store.ChunkKey(id)
	obj, err := raw.GetObject(ctx, bucket, name, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frame := new(bytes.Buffer)
	if _, err := frame.ReadFrom(obj); err != nil {
		t.Fatalf("chunk is not at %s: %v", name, err)
	}
	obj.Close()

	// Flip bytes in the stored chunk, behind the store's back.
	bad := frame.Bytes()
	for i := len(bad) / 2; i < len(bad)/2+8; i++ {
		bad[i] ^= 0xff
	}
	putRaw(t, raw, bucket, name, bad)
	_, err = s.GetChunk(ctx, h, id, nil)
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("GetChunk of a damaged chunk = %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), id.String()) {
		t.Errorf("error %q does not name chunk %s", err, id)
	}
	// Still there, as far as HasChunk knows: reads are what check.
	if ok, err := s.HasChunk(ctx, id); err != nil || !ok {
		t.Fatalf("HasChunk of a damaged chunk = %v, %v", ok, err)
	}

	// An import's shared lock keeps garbage collection out.
	imp, err := s.LockShared(ctx, "import", nil)
	if err != nil {
		t.Fatalf("LockShared: %v", err)
	}
	imp2, err := s.LockShared(ctx, "another import", nil)
	if err != nil {
		t.Fatalf("second LockShared: %v", err)
	}
	locks, err := s.Locks(ctx)
	if err != nil || len(locks) != 2 {
		t.Fatalf("Locks = %v, %v; want the two shared locks", locks, err)
	}
	_, err = s.LockExclusive(ctx, "garbage collection")
	if !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), "import") {
		t.Fatalf("LockExclusive while imports run = %v, want ErrBusy naming them", err)
	}
	if _, err := s.GC(ctx); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("GC while imports run = %v, want ErrBusy", err)
	}
	if err := imp.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockExclusive(ctx, "garbage collection"); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("LockExclusive while one import runs = %v, want ErrBusy", err)
	}
	if err := imp2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	gc, err := s.LockExclusive(ctx, "garbage collection")
	if err != nil {
		t.Fatalf("LockExclusive with no one else = %v", err)
	}
	if err := gc.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if locks, err := s.Locks(ctx); err != nil || len(locks) != 0 {
		t.Fatalf("Locks after releasing all = %v, %v", locks, err)
	}

	// Garbage collection frees the chunk no version references.
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if res.FreedChunks != 1 {
		t.Errorf("GC freed %d chunks, want 1", res.FreedChunks)
	}
	if ok, err := s.HasChunk(ctx, id); err != nil || ok {
		t.Fatalf("HasChunk after GC = %v, %v; want false", ok, err)
	}
}

func TestStoreOnMissingBucketIsNotEmpty(t *testing.T) {
	// A store whose bucket vanished must not look like an empty store: Init would then write a
	// marker into nothing, and HasChunk would send every chunk again.
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	b := open(t, config(srv, bucket, ""))
	s := store.New(b, store.Options{})
	if err := srv.Client(t).RemoveBucket(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	b.bucketProof = 0
	if err := s.Check(t.Context()); !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Check = %v, want ErrUnavailable", err)
	}
	if ok, err := s.HasChunk(t.Context(), manifest.BLAKE3.Sum([]byte("x"))); ok || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("HasChunk = %v, %v; want ErrUnavailable", ok, err)
	}
}

func TestHoldsOnS3(t *testing.T) {
	srv := miniotest.Shared(t)
	s := store.New(open(t, config(srv, srv.NewBucket(t), "school/lab1")), store.Options{})
	if err := s.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	storetest.Holds(t, s)
}

// A tag file larger than any tms writes is refused from its length, before its body is read.
func TestOversizedTagOnS3(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	s := store.New(open(t, config(srv, bucket, "lab")), store.Options{})
	if err := s.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	v := storetest.Publish(t, s, "lab", "latest", "x")
	if id, err := s.GetTag(t.Context(), "lab", "latest"); err != nil || id != v.ID {
		t.Fatalf("GetTag = %v, %v", id, err)
	}
	putRaw(t, srv.Client(t), bucket, "lab/refs/lab/latest", bytes.Repeat([]byte("a"), 1<<20))
	if _, err := s.GetTag(t.Context(), "lab", "latest"); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "1048576 bytes, more than") {
		t.Fatalf("GetTag of a 1 MiB tag = %v; want ErrCorrupt saying its size", err)
	}
}
