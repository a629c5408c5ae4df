package sibling

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"tms/manifest"
	"tms/store"
)

// ReadThrough returns a backend that reads from b and, for a chunk, a manifest or a signature b
// lacks, asks the region's siblings through f: what one sends is checked (Fetcher), stored in
// b (a version's signature before its manifest, so a published version carries it) and
// returned. A manifest's Stat reads through too, so a version a sibling holds counts as here
// (the first use brings its manifest; its chunks come as they are read). A chunk's Stat does
// not: "is it here?" for a chunk decides what to fetch, and a round trip per chunk to answer it
// would cost more than the fetch. Everything else is b's.
//
// Reads of one object at once share one fetch, and an object no sibling had is not asked for
// again for a second.
func ReadThrough(b store.Backend, f *Fetcher) store.Backend {
	return &readThrough{Backend: b, f: f, miss: map[string]time.Time{}}
}

type readThrough struct {
	store.Backend
	f     *Fetcher
	group singleflight.Group

	mu   sync.Mutex
	miss map[string]time.Time // objects no sibling had, until when not to ask again
}

// missFor is how long an object no sibling had is not asked for again.
const missFor = time.Second

// maxMisses bounds the misses remembered.
const maxMisses = 4096

var (
	_ store.Batcher       = (*readThrough)(nil)
	_ store.IntoGetter    = (*readThrough)(nil)
	_ store.LimitedGetter = (*readThrough)(nil)
	_ store.Capacitor     = (*readThrough)(nil)
	_ store.Wrapper       = (*readThrough)(nil)
)

// Unwrap is the backend behind the read-through: the store keeps using its own features
// (a directory's packs for sizes, gc and verify).
func (r *readThrough) Unwrap() store.Backend { return r.Backend }

// Inner returns the backend under a ReadThrough (b itself otherwise): what a server serves
// its siblings from.
func Inner(b store.Backend) store.Backend {
	if r, ok := b.(*readThrough); ok {
		return r.Backend
	}
	return b
}

// kindOf says which kind of lendable object key names, and its id.
func kindOf(key string) (string, manifest.ID, bool) {
	var kind, rest string
	switch {
	case strings.HasPrefix(key, "chunks/"):
		kind, rest = KindChunk, key[strings.LastIndexByte(key, '/')+1:]
	case strings.HasPrefix(key, "manifests/"):
		kind, rest = KindManifest, strings.TrimPrefix(key, "manifests/")
	case strings.HasPrefix(key, "signatures/"):
		kind, rest = KindSignature, strings.TrimPrefix(key, "signatures/")
	default:
		return "", manifest.ID{}, false
	}
	id, err := manifest.ParseID(rest)
	if err != nil || objectKey(kind, id) != key {
		return "", manifest.ID{}, false
	}
	return kind, id, true
}

func (r *readThrough) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := r.Backend.Get(ctx, key)
	if !errors.Is(err, store.ErrNotFound) {
		return b, err
	}
	return r.through(ctx, key, err)
}

func (r *readThrough) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	var b []byte
	var err error
	if ig, ok := r.Backend.(store.IntoGetter); ok {
		b, err = ig.GetInto(ctx, key, buf)
	} else {
		b, err = r.Backend.Get(ctx, key)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return b, err
	}
	return r.through(ctx, key, err)
}

// GetLimited is b's: the small files it reads (markers, tags, holds) are no sibling's to lend.
func (r *readThrough) GetLimited(ctx context.Context, key string, limit int64) ([]byte, error) {
	if lg, ok := r.Backend.(store.LimitedGetter); ok {
		return lg.GetLimited(ctx, key, limit)
	}
	b, err := r.Backend.Get(ctx, key)
	if err == nil && int64(len(b)) > limit {
		return nil, store.TooLarge(r.Backend.String(), key, int64(len(b)), limit)
	}
	return b, err
}

func (r *readThrough) Stat(ctx context.Context, key string) (store.ObjectInfo, error) {
	info, err := r.Backend.Stat(ctx, key)
	if !errors.Is(err, store.ErrNotFound) || !strings.HasPrefix(key, "manifests/") {
		return info, err
	}
	if _, terr := r.through(ctx, key, err); terr != nil {
		return info, terr
	}
	return r.Backend.Stat(ctx, key)
}

func (r *readThrough) NewBatch() store.Batch {
	if bb, ok := r.Backend.(store.Batcher); ok {
		return bb.NewBatch()
	}
	return &directBatch{b: r.Backend}
}

func (r *readThrough) Capacity(ctx context.Context) (int64, int64, error) {
	if c, ok := r.Backend.(store.Capacitor); ok {
		return c.Capacity(ctx)
	}
	return 0, 0, nil
}

// through fetches key from a sibling after b answered notFound.
func (r *readThrough) through(ctx context.Context, key string, notFound error) ([]byte, error) {
	kind, id, ok := kindOf(key)
	if !ok || r.f == nil {
		return nil, notFound
	}
	now := time.Now()
	r.mu.Lock()
	until, missed := r.miss[key]
	r.mu.Unlock()
	if missed && now.Before(until) {
		return nil, notFound
	}
	v, err, _ := r.group.Do(key, func() (any, error) {
		// Another read may have brought it while this one waited.
		if b, err := r.Backend.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
			return b, err
		}
		return r.fetch(ctx, kind, id)
	})
	if errors.Is(err, store.ErrNotFound) {
		r.mu.Lock()
		if len(r.miss) >= maxMisses {
			clear(r.miss)
		}
		r.miss[key] = time.Now().Add(missFor)
		r.mu.Unlock()
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

func (r *readThrough) fetch(ctx context.Context, kind string, id manifest.ID) ([]byte, error) {
	switch kind {
	case KindChunk:
		frame, err := r.f.Chunk(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := r.Backend.Put(ctx, store.ChunkKey(id), frame); err != nil {
			return nil, err
		}
		return frame, nil
	default:
		// A manifest or a signature: both come, the signature stored first.
		b, sig, err := r.f.Version(ctx, id)
		if err != nil {
			return nil, err
		}
		enc := sig.Encode()
		if err := r.Backend.Put(ctx, store.SignatureKey(id), enc); err != nil {
			return nil, err
		}
		if err := r.Backend.Put(ctx, objectKey(KindManifest, id), b); err != nil {
			return nil, err
		}
		r.f.log().Info("took a version's manifest from a sibling", "version", id.Short())
		if kind == KindSignature {
			return enc, nil
		}
		return b, nil
	}
}

// directBatch puts through a backend that has no batches of its own, at Commit.
type directBatch struct {
	b    store.Backend
	mu   sync.Mutex
	puts []batchPut
}

type batchPut struct {
	key  string
	data []byte
}

func (d *directBatch) Put(_ context.Context, key string, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.puts = append(d.puts, batchPut{key, append([]byte(nil), data...)})
	return nil
}

func (d *directBatch) Commit(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.puts {
		if err := d.b.Put(ctx, p.key, p.data); err != nil {
			d.puts = d.puts[i:]
			return err
		}
	}
	d.puts = nil
	return nil
}

func (d *directBatch) Abort() {
	d.mu.Lock()
	d.puts = nil
	d.mu.Unlock()
}
