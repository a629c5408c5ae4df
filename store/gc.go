package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"tms/manifest"
)

// GCResult says what garbage collection did.
type GCResult struct {
	Versions    int   // versions whose chunks were kept
	KeptChunks  int64 // chunks still referenced
	KeptBytes   int64
	FreedChunks int64 // unreferenced chunks deleted
	FreedBytes  int64
	StaleTemps  int // leftovers of crashed writers removed
	OrphanStats int // stats of versions that are gone, removed
}

// GC deletes every chunk that no published version references. It holds the store exclusively
// while it runs, so no import can be between finding a chunk present and publishing a manifest
// that needs it; it fails with ErrBusy while imports run. A manifest that cannot be read stops
// it before anything is deleted: without it, GC cannot know what is still needed.
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	var res GCResult
	lock, err := s.LockExclusive(ctx, "garbage collection")
	if err != nil {
		return res, err
	}
	defer lock.Release(ctx)

	if d, ok := s.b.(*Dir); ok {
		n, err := d.RemoveStaleTemps(ctx, time.Hour)
		if err != nil {
			return res, err
		}
		res.StaleTemps = n
	}

	ids, err := s.VersionIDs(ctx)
	if err != nil {
		return res, err
	}
	live := map[manifest.ID]struct{}{}
	versions := map[manifest.ID]struct{}{}
	for _, id := range ids {
		v, err := s.GetManifest(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // removed while we listed
		}
		if err != nil {
			return res, fmt.Errorf("garbage collection stopped before deleting anything: %w", err)
		}
		versions[id] = struct{}{}
		for _, c := range v.Manifest.Chunks {
			if !c.IsZero() {
				live[c] = struct{}{}
			}
		}
	}
	res.Versions = len(versions)

	var dead []ObjectInfo
	err = s.b.List(ctx, "chunks/", func(o ObjectInfo) error {
		id, err := manifest.ParseID(o.Key[strings.LastIndexByte(o.Key, '/')+1:])
		if err != nil || ChunkKey(id) != o.Key {
			return nil // not a chunk tms wrote
		}
		if _, ok := live[id]; ok {
			res.KeptChunks++
			res.KeptBytes += o.Size
			return nil
		}
		dead = append(dead, o)
		return nil
	})
	if err != nil {
		return res, err
	}
	if err := lock.Err(); err != nil {
		return res, fmt.Errorf("garbage collection stopped: lost its lock: %w", err)
	}
	for _, o := range dead {
		if err := s.b.Delete(ctx, o.Key); err != nil {
			return res, err
		}
		res.FreedChunks++
		res.FreedBytes += o.Size
	}
	var orphans []string
	err = s.b.List(ctx, "stats/", func(o ObjectInfo) error {
		id, err := manifest.ParseID(strings.TrimSuffix(strings.TrimPrefix(o.Key, "stats/"), ".json"))
		if err != nil {
			return nil
		}
		if _, ok := versions[id]; !ok {
			orphans = append(orphans, o.Key)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	for _, k := range orphans {
		if err := s.b.Delete(ctx, k); err != nil {
			return res, err
		}
		res.OrphanStats++
	}
	return res, nil
}
