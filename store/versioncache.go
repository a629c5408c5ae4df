package store

import (
	"context"
	"sync"

	"tms/manifest"
)

// VersionCache keeps the last versions read from a store, each with the set of its chunks, for
// servers that answer many requests about the same few versions (a region serving a deploy's
// chunks to thirty terminals, a peer pull). Versions are immutable, and reading and checking a
// 2 GiB image's manifest for every chunk request would cost more than serving the chunk.
//
// The zero value holds up to DefaultVersionCacheSize versions; it is safe for concurrent use.
// When full, the version read longest ago is dropped.
//
//	var versions store.VersionCache // a field of the server
//	cv, err := versions.Get(ctx, s, id)
//	if !cv.HasChunk(chunk) { refuse }
type VersionCache struct {
	// Size is the most versions kept (DefaultVersionCacheSize if 0).
	Size int

	mu    sync.Mutex
	byID  map[manifest.ID]*CachedVersion
	order []manifest.ID // oldest first
}

// DefaultVersionCacheSize is how many versions a VersionCache keeps unless told.
const DefaultVersionCacheSize = 16

// CachedVersion is a version and the set of its (non-zero) chunks.
type CachedVersion struct {
	*Version
	chunks map[manifest.ID]struct{}
}

// HasChunk reports whether id is one of the version's stored chunks (never the zero id, which
// stands for an all-zero chunk that is not stored).
func (c *CachedVersion) HasChunk(id manifest.ID) bool {
	_, ok := c.chunks[id]
	return ok
}

// NumChunks returns how many distinct non-zero chunks the version has.
func (c *CachedVersion) NumChunks() int { return len(c.chunks) }

// Get returns version id from the cache, reading (and checking) it from s when it is not
// there. Errors are those of s.GetManifest and are not cached. Since versions are
// content-addressed, one cache may serve several stores' versions, but a version is cached
// once it is read from any of them.
func (c *VersionCache) Get(ctx context.Context, s *Store, id manifest.ID) (*CachedVersion, error) {
	c.mu.Lock()
	cv, ok := c.byID[id]
	c.mu.Unlock()
	if ok {
		return cv, nil
	}
	v, err := s.GetManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.Add(v), nil
}

// NewCachedVersion returns v, which the caller read and checked, with its chunk set, for a
// caller that keeps it elsewhere than a VersionCache (a version not yet in the store).
func NewCachedVersion(v *Version) *CachedVersion {
	cv := &CachedVersion{Version: v, chunks: make(map[manifest.ID]struct{}, len(v.Manifest.Chunks))}
	for _, id := range v.Manifest.Chunks {
		if !id.IsZero() {
			cv.chunks[id] = struct{}{}
		}
	}
	return cv
}

// Add caches v, which the caller read and checked, and returns its entry.
func (c *VersionCache) Add(v *Version) *CachedVersion {
	cv := NewCachedVersion(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byID[v.ID]; ok {
		return old // read twice at once: keep the first
	}
	size := c.Size
	if size <= 0 {
		size = DefaultVersionCacheSize
	}
	if c.byID == nil {
		c.byID = map[manifest.ID]*CachedVersion{}
	}
	for len(c.order) >= size {
		delete(c.byID, c.order[0])
		c.order = c.order[1:]
	}
	c.byID[v.ID] = cv
	c.order = append(c.order, v.ID)
	return cv
}

// Len returns how many versions the cache holds.
func (c *VersionCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID)
}
