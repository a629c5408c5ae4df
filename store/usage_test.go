package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUsageCountsBytesAndCachesTheCount checks that Usage counts the bytes of a directory
// store's objects, gives its filesystem's size, and lists the store again only once its count
// is old, or a few seconds after the store changed.
func TestUsageCountsBytesAndCachesTheCount(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	s := New(d, Options{})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	onDisk := func() int64 {
		var n int64
		filepath.Walk(d.Root(), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && filepath.Base(filepath.Dir(p)) != "tmp" {
				n += fi.Size()
			}
			return nil
		})
		return n
	}
	u, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.Used != onDisk() || u.Used == 0 {
		t.Fatalf("Used = %d, the store's files hold %d", u.Used, onDisk())
	}
	if u.Capacity <= 0 || u.Available < 0 || u.Available > u.Capacity {
		t.Fatalf("Capacity = %d, Available = %d", u.Capacity, u.Available)
	}

	// A chunk put behind the store's back: the cached count stands.
	if err := d.Put(ctx, "chunks/ab/abcd", bytes.Repeat([]byte("x"), 10000)); err != nil {
		t.Fatal(err)
	}
	if u2, _ := s.Usage(ctx); u2.Used != u.Used || !u2.At.Equal(u.At) {
		t.Fatalf("Usage listed the store again at once: %d, then %d", u.Used, u2.Used)
	}
	// Once the count is UsageMaxAge old, it is counted again.
	s.usage.at = s.usage.at.Add(-UsageMaxAge)
	if u3, _ := s.Usage(ctx); u3.Used != u.Used+10000 {
		t.Fatalf("after UsageMaxAge: Used = %d, want %d", u3.Used, u.Used+10000)
	}

	// A change the store makes (gc here) marks the count stale: counted again after
	// usageMinAge, not before.
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	want := onDisk()
	if u4, _ := s.Usage(ctx); u4.Used == want && want != u.Used+10000 {
		t.Fatalf("counted again within usageMinAge of the last count")
	}
	s.usage.at = time.Now().Add(-usageMinAge)
	if u5, _ := s.Usage(ctx); u5.Used != want {
		t.Fatalf("after gc: Used = %d, the store's files hold %d", u5.Used, want)
	}
}

// TestUsageOfAStoreThatCannotBeListed checks that a failure to count is an error, not zero.
func TestUsageOfAStoreThatCannotBeListed(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	s := New(d, Options{})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Usage(cctx); err == nil {
		t.Fatal("Usage with a canceled context: no error")
	}
}
