package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"tms/manifest"
)

// VersionInfo describes one version a store holds: what a region reports to central and what
// eviction chooses from.
type VersionInfo struct {
	ID   manifest.ID
	Name string
	// Tags are the tags of Name that point to the version, sorted.
	Tags []string
	// StoredBytes is the stored (compressed) bytes of the version's distinct chunks, shared
	// ones included; OwnBytes the part of it no other version of the store references: what
	// removing the version (and collecting garbage) frees.
	StoredBytes, OwnBytes int64
	// Stored is when the version was published in this store: its manifest object's
	// modification time (the manifest is written last, when every chunk is in).
	Stored time.Time
	// Holds are the version's live holds, its pin first (see Hold, Pin).
	Holds []Hold
}

// Pinned reports whether the version is pinned.
func (v VersionInfo) Pinned() bool { return len(v.Holds) > 0 && v.Holds[0].Pinned }

// Held reports whether anything keeps the version: a pin or a live hold.
func (v VersionInfo) Held() bool { return len(v.Holds) > 0 }

// Versions describes every version the store holds, oldest stored first (then by id). It reads
// every manifest twice and lists every chunk (and, in a directory store, every pack index),
// so a caller that asks often keeps the answer a while.
func (s *Store) Versions(ctx context.Context) ([]VersionInfo, error) {
	sc, err := s.scanVersions(ctx)
	if err != nil {
		return nil, err
	}
	return sc.infos, nil
}

// versionScan is what scanVersions learnt: each version's description, how many versions
// reference each chunk, and each chunk's stored size.
type versionScan struct {
	infos []VersionInfo
	refs  map[manifest.ID]int32
	sizes map[manifest.ID]int64
	// garbage is the stored bytes of chunks no version references: the next gc frees them.
	garbage int64
}

func (s *Store) scanVersions(ctx context.Context) (*versionScan, error) {
	sc := &versionScan{refs: map[manifest.ID]int32{}, sizes: map[manifest.ID]int64{}}
	if err := s.b.List(ctx, "chunks/", func(o ObjectInfo) error {
		if id, ok := chunkKeyID(o.Key); ok {
			sc.sizes[id] = o.Size
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if d, ok := asDir(s.b); ok {
		if _, err := d.PackedChunks(ctx, func(p PackedChunk) error {
			if _, loose := sc.sizes[p.ID]; !loose {
				sc.sizes[p.ID] = p.Size
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	var objs []ObjectInfo
	if err := s.b.List(ctx, "manifests/", func(o ObjectInfo) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		return nil, err
	}
	tags, err := s.Tags(ctx)
	if err != nil {
		return nil, err
	}
	holds, err := s.AllHolds(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	// First pass: each version's stored bytes and the chunks' reference counts.
	for _, o := range objs {
		id, err := manifest.ParseID(strings.TrimPrefix(o.Key, "manifests/"))
		if err != nil || manifestKey(id) != o.Key {
			continue // not a manifest tms wrote
		}
		v, err := s.GetManifest(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // removed while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("describing the versions of store %s: %w", s, err)
		}
		info := VersionInfo{ID: id, Name: v.Manifest.Meta.Name, Stored: o.ModTime}
		for _, c := range distinctChunks(v.Manifest) {
			sc.refs[c]++
			info.StoredBytes += sc.sizes[c]
		}
		for _, t := range tags {
			if t.Version == id && t.Name == info.Name {
				info.Tags = append(info.Tags, t.Tag)
			}
		}
		for _, h := range holds {
			if h.Version == id && h.Live(now) {
				info.Holds = append(info.Holds, h)
			}
		}
		sc.infos = append(sc.infos, info)
	}
	for c, n := range sc.sizes {
		if sc.refs[c] == 0 {
			sc.garbage += n
		}
	}
	// Second pass: the bytes only each version references.
	for i := range sc.infos {
		v, err := s.GetManifest(ctx, sc.infos[i].ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("describing the versions of store %s: %w", s, err)
		}
		sc.infos[i].OwnBytes = sc.own(v.Manifest)
	}
	sort.SliceStable(sc.infos, func(i, j int) bool {
		a, b := sc.infos[i], sc.infos[j]
		if !a.Stored.Equal(b.Stored) {
			return a.Stored.Before(b.Stored)
		}
		return a.ID.String() < b.ID.String()
	})
	return sc, nil
}

// own is the stored bytes of m's chunks that no other version references.
func (sc *versionScan) own(m *manifest.Manifest) int64 {
	var n int64
	for _, c := range distinctChunks(m) {
		if sc.refs[c] == 1 {
			n += sc.sizes[c]
		}
	}
	return n
}

// drop takes m's references away, as removing its version does, and returns the stored bytes
// that no version references any more.
func (sc *versionScan) drop(m *manifest.Manifest) int64 {
	var n int64
	for _, c := range distinctChunks(m) {
		if sc.refs[c] > 0 {
			sc.refs[c]--
			if sc.refs[c] == 0 {
				n += sc.sizes[c]
			}
		}
	}
	return n
}

func distinctChunks(m *manifest.Manifest) []manifest.ID {
	seen := make(map[manifest.ID]struct{}, len(m.Chunks))
	var out []manifest.ID
	for _, c := range m.Chunks {
		if c.IsZero() {
			continue
		}
		if _, ok := seen[c]; ok {
			continue
		}
		seen[c] = struct{}{}
		out = append(out, c)
	}
	return out
}

// MissingBytes estimates the stored bytes version v would add to the store: the chunks of v
// the store lacks, each counted at storedPerChunk if that is more than 0 (the version's stored
// bytes over its chunk count, when the source says), else at the manifest's chunk size, which
// bounds a chunk's compressed frame but for a few bytes of framing.
func (s *Store) MissingBytes(ctx context.Context, m *manifest.Manifest, storedPerChunk int64) (missing int64, chunks int64, err error) {
	per := storedPerChunk
	if per <= 0 {
		per = int64(m.ChunkSize) + 64
	}
	for _, c := range distinctChunks(m) {
		_, err := s.StatChunk(ctx, c)
		if errors.Is(err, ErrNotFound) {
			missing += per
			chunks++
			continue
		}
		if err != nil {
			return 0, 0, err
		}
	}
	return missing, chunks, nil
}

// DistinctChunks counts m's distinct non-zero chunks: what a store holds of it.
func DistinctChunks(m *manifest.Manifest) int64 { return int64(len(distinctChunks(m))) }
