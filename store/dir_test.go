package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := NewDir(filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDirPutGetStatDeleteList(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	if err := d.Put(ctx, "refs/lab/latest", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "refs/lab/latest", []byte("bb")); err != nil {
		t.Fatal(err)
	}
	if b, err := d.Get(ctx, "refs/lab/latest"); err != nil || string(b) != "bb" {
		t.Fatalf("Get = %q, %v", b, err)
	}
	if o, err := d.Stat(ctx, "refs/lab/latest"); err != nil || o.Size != 2 {
		t.Fatalf("Stat = %+v, %v", o, err)
	}
	d.Put(ctx, "refs/other/x", nil)
	var keys []string
	if err := d.List(ctx, "refs/lab/", func(o ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "refs/lab/latest" {
		t.Fatalf("List = %v", keys)
	}
	// Nothing from tmp/ is listed, and nothing is left there.
	var all []string
	d.List(ctx, "", func(o ObjectInfo) error { all = append(all, o.Key); return nil })
	for _, k := range all {
		if strings.HasPrefix(k, "tmp/") {
			t.Errorf("listed %s", k)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(d.Root(), "tmp")); len(ents) != 0 {
		t.Errorf("temporary files left behind: %v", ents)
	}
	if err := d.Delete(ctx, "refs/lab/latest"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "refs/lab/latest"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
	if _, err := d.Get(ctx, "refs/lab/latest"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

func TestDirErrorsAreClassified(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	for _, key := range []string{"../escape", "/abs", "a/../../b", ""} {
		if err := d.Put(ctx, key, nil); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Put(%q) = %v, want a refusal", key, err)
		}
	}
	// A file where a directory should be: the store cannot answer, which is not "missing".
	os.WriteFile(filepath.Join(d.Root(), "chunks"), []byte("x"), 0o644)
	_, err := d.Get(ctx, "chunks/ab/abcd")
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
		t.Errorf("Get under a file: %v, want ErrUnavailable", err)
	}
	if _, err := OpenDir(filepath.Join(d.Root(), "missing")); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenDir of a missing directory: %v", err)
	}
	if _, err := NewDir(filepath.Join(d.Root(), "chunks", "x")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("NewDir under a file: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Get(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v", err)
	}
}

func TestDirBatchIsInvisibleUntilCommit(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	b := d.NewBatch()
	if err := b.Put(ctx, "chunks/aa/one", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "chunks/aa/one"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("staged object visible before commit: %v", err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Get(ctx, "chunks/aa/one"); err != nil || string(got) != "1" {
		t.Fatalf("after commit: %q, %v", got, err)
	}
	b.Put(ctx, "chunks/aa/two", []byte("2"))
	b.Abort()
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "chunks/aa/two"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted object visible: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.Root(), "tmp")); len(ents) != 0 {
		t.Errorf("abort left temporary files: %v", ents)
	}
}

func TestStaleTempsAreCollected(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	s := New(d, Options{})
	s.Init(ctx)
	b := d.NewBatch()
	b.Put(ctx, "chunks/aa/crashed", []byte("x")) // never committed: a crashed import
	old := time.Now().Add(-2 * time.Hour)
	ents, _ := os.ReadDir(filepath.Join(d.Root(), "tmp"))
	for _, e := range ents {
		os.Chtimes(filepath.Join(d.Root(), "tmp", e.Name()), old, old)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.StaleTemps != 1 {
		t.Fatalf("gc removed %d stale temporary files, want 1", res.StaleTemps)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	s := New(newDir(t), Options{})
	s.Init(ctx)

	ex, err := s.LockExclusive(ctx, "gc one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockExclusive(ctx, "gc two"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "gc one") {
		t.Fatalf("second exclusive lock: %v", err)
	}
	// A shared lock waits for the exclusive one to go.
	waited := make(chan LockInfo, 1)
	got := make(chan error, 1)
	go func() {
		l, err := s.LockShared(ctx, "import", func(h LockInfo) {
			select {
			case waited <- h:
			default:
			}
		})
		if err == nil {
			l.Release(ctx) // before reporting, so the check below sees it gone
		}
		got <- err
	}()
	h := <-waited
	if h.Purpose != "gc one" {
		t.Fatalf("waited for %+v", h)
	}
	select {
	case err := <-got:
		t.Fatalf("shared lock taken while gc held the store: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	ex.Release(ctx)
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	// A lock left by a process that is gone does not count.
	dead := []byte(`{"kind":"exclusive","purpose":"crashed gc","host":"` + hostname() + `","pid":999999999,"created":"2026-01-01T00:00:00Z"}`)
	s.b.Put(ctx, "locks/exclusive-dead.json", dead)
	l, err := s.LockShared(ctx, "import", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Release(ctx)
	locks, _ := s.Locks(ctx)
	if len(locks) != 0 {
		t.Fatalf("live locks after release: %v", locks)
	}
}

func hostname() string { h, _ := os.Hostname(); return h }

func TestCodecRejectsBombsAndGarbage(t *testing.T) {
	c := NewCodec(0)
	big := c.Compress(nil, make([]byte, 2<<20))
	if _, err := c.Decompress(nil, big, 1<<20); err == nil {
		t.Fatal("a frame larger than a chunk was accepted")
	}
	if _, err := c.Decompress(nil, []byte("not zstd"), 1<<20); err == nil {
		t.Fatal("garbage accepted")
	}
	data := bytes.Repeat([]byte("tms"), 1000)
	out, err := c.Decompress(nil, c.Compress(nil, data), 1<<20)
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("round trip: %v", err)
	}
}

func FuzzDecodeChunk(f *testing.F) {
	c := NewCodec(0)
	f.Add(c.Compress(nil, []byte("hello")))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, err := c.Decompress(nil, frame, 1<<20)
		if err == nil && len(out) > 1<<20 {
			t.Fatalf("decoded %d bytes past the limit", len(out))
		}
	})
}
