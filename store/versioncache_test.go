package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
)

// countingBackend counts manifest reads.
type countingBackend struct {
	store.Backend
	manifests atomic.Int64
}

func (b *countingBackend) Get(ctx context.Context, key string) ([]byte, error) {
	if strings.HasPrefix(key, "manifests/") {
		b.manifests.Add(1)
	}
	return b.Backend.Get(ctx, key)
}

func TestVersionCache(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	var vs []*store.Version
	for i, chunks := range [][]string{{"a", "b"}, {"c"}, {"d", ""}, {"e"}} {
		vs = append(vs, storetest.Publish(t, s, "lab", string(rune('1'+i)), chunks...))
	}
	cb := &countingBackend{Backend: s.Backend()}
	cs := store.New(cb, store.Options{})
	if _, err := cb.Backend.Get(ctx, "manifests/"+vs[0].ID.String()); err != nil {
		t.Fatalf("manifest key: %v (the counting backend would count nothing)", err)
	}

	t.Run("reads a version once and knows its chunks", func(t *testing.T) {
		var c store.VersionCache
		for range 3 {
			cv, err := c.Get(ctx, cs, vs[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if cv.ID != vs[0].ID || !cv.HasChunk(vs[0].Manifest.Chunks[1]) || cv.HasChunk(vs[1].Manifest.Chunks[0]) || cv.HasChunk(manifest.ID{}) {
				t.Fatalf("entry of %s is wrong", vs[0].ID.Short())
			}
		}
		if n := cb.manifests.Swap(0); n != 1 {
			t.Errorf("read the manifest %d times, want 1", n)
		}
	})
	t.Run("keeps at most Size versions, dropping the oldest", func(t *testing.T) {
		c := store.VersionCache{Size: 2}
		for _, v := range vs {
			if _, err := c.Get(ctx, cs, v.ID); err != nil {
				t.Fatal(err)
			}
		}
		if c.Len() != 2 {
			t.Fatalf("holds %d versions, want 2", c.Len())
		}
		cb.manifests.Store(0)
		c.Get(ctx, cs, vs[3].ID) // newest: still there
		if n := cb.manifests.Swap(0); n != 0 {
			t.Errorf("newest version read again")
		}
		c.Get(ctx, cs, vs[0].ID) // oldest: dropped
		if n := cb.manifests.Swap(0); n != 1 {
			t.Errorf("oldest version not read again (%d reads)", n)
		}
	})
	t.Run("does not cache a failure", func(t *testing.T) {
		var c store.VersionCache
		missing := manifest.BLAKE3.Sum([]byte("no such version"))
		if _, err := c.Get(ctx, cs, missing); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing version: %v, want ErrNotFound", err)
		}
		if c.Len() != 0 {
			t.Errorf("a failed read left an entry")
		}
	})
	t.Run("serves concurrent readers one entry per version", func(t *testing.T) {
		c := store.VersionCache{Size: 3}
		var wg sync.WaitGroup
		got := make([]*store.CachedVersion, 16)
		for i := range got {
			wg.Go(func() {
				cv, err := c.Get(ctx, cs, vs[i%len(vs)].ID)
				if err != nil {
					t.Error(err)
				}
				got[i] = cv
			})
		}
		wg.Wait()
		if c.Len() > 3 {
			t.Errorf("holds %d versions, more than its size", c.Len())
		}
		for i, cv := range got {
			if cv == nil || cv.ID != vs[i%len(vs)].ID {
				t.Fatalf("reader %d got the wrong version", i)
			}
		}
	})
}
