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
	// OrphanSignatures counts signatures of versions that are gone (or whose copy never
	// finished), removed.
	OrphanSignatures int
	// Held counts the live holds (see Hold) and pins; ExpiredHolds the long-expired ones
	// removed; OrphanPins the pins of versions that are gone (removed by hand), removed.
	Held, ExpiredHolds, OrphanPins int
	// A directory store's packs (see DirOptions.Packs): packs removed whole, and packs
	// rewritten (their live chunks copied to a new pack, the old one removed). FreedBytes
	// counts the freed chunks' stored bytes, as for chunk files; a pack's index (48 bytes a
	// chunk) is freed with it. DamagedPacks are packs whose index cannot be read: gc leaves
	// them alone; tms store verify reports them.
	RemovedPacks, RewrittenPacks int
	DamagedPacks                 []string
}

// expiredHoldKept is how long gc leaves a lapsed hold in place, for people to see, before it
// removes it. Long enough that no holder still renews it.
const expiredHoldKept = 24 * time.Hour

// GC deletes every chunk that no published version references. Held versions (see Hold) are
// published, so their chunks stay; a live hold on a version whose manifest is gone stops it. It holds the store exclusively
// while it runs, so no import can be between finding a chunk present and publishing a manifest
// that needs it; it fails with ErrBusy while imports run. A manifest that cannot be read stops
// it before anything is deleted: without it, GC cannot know what is still needed.
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	defer s.changed()
	var res GCResult
	lock, err := s.LockExclusive(ctx, "garbage collection")
	if err != nil {
		return res, err
	}
	defer lock.Release(ctx)

	if d, ok := asDir(s.b); ok {
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

	// Every hold is taken on a published version, and Remove does not delete a held one, so a
	// held version's chunks are live above. A hold on a version whose manifest is gone all the
	// same (deleted by hand, or by a tms that knew no holds) names chunks a task may still be
	// reading that gc cannot tell from garbage: stop.
	holds, err := s.AllHolds(ctx)
	if err != nil {
		return res, fmt.Errorf("garbage collection stopped before deleting anything: %w", err)
	}
	now := time.Now()
	var expired, orphanPins []Hold
	for _, h := range holds {
		_, published := versions[h.Version]
		if h.Pinned && !published {
			// A pin keeps a version for later; nobody reads a version that is gone for it.
			orphanPins = append(orphanPins, h)
			continue
		}
		if !h.Live(now) {
			if now.Sub(h.Until) > expiredHoldKept {
				expired = append(expired, h)
			}
			continue
		}
		res.Held++
		if !published && h.Ahead {
			continue // a reservation of a version still to come: no chunk of it to protect yet
		}
		if !published {
			return res, &Error{Kind: ErrBusy, Store: s.b.String(), What: "version " + h.Version.Short(),
				Err: fmt.Errorf("garbage collection stopped before deleting anything: held by %s but its manifest is gone, so its chunks cannot be told from garbage", h)}
		}
	}

	var dead []ObjectInfo
	looseLive := map[manifest.ID]struct{}{} // live chunks kept in chunk files
	err = s.b.List(ctx, "chunks/", func(o ObjectInfo) error {
		id, err := manifest.ParseID(o.Key[strings.LastIndexByte(o.Key, '/')+1:])
		if err != nil || ChunkKey(id) != o.Key {
			return nil // not a chunk tms wrote
		}
		if _, ok := live[id]; ok {
			res.KeptChunks++
			res.KeptBytes += o.Size
			looseLive[id] = struct{}{}
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
	if d, ok := asDir(s.b); ok {
		pr, err := d.collectPacks(ctx, live, looseLive, lock.Err)
		res.KeptChunks += pr.KeptChunks
		res.KeptBytes += pr.KeptBytes
		res.FreedChunks += pr.FreedChunks
		res.FreedBytes += pr.FreedBytes
		res.RemovedPacks, res.RewrittenPacks = pr.Removed, pr.Rewritten
		res.DamagedPacks = pr.Damaged
		for _, p := range pr.Damaged {
			s.log.Warn("garbage collection left a damaged pack alone: run tms store verify", "store", s.b.String(), "pack", p)
		}
		if err != nil {
			return res, err
		}
	}
	for _, h := range expired {
		if err := s.b.Delete(ctx, holdKey(h.Version, h.Holder)); err != nil {
			return res, err
		}
		res.ExpiredHolds++
	}
	for _, h := range orphanPins {
		if err := s.b.Delete(ctx, pinKey(h.Version)); err != nil {
			return res, err
		}
		res.OrphanPins++
	}
	for _, p := range []struct {
		prefix, suffix string
		count          *int
	}{{"stats/", ".json", &res.OrphanStats}, {"signatures/", "", &res.OrphanSignatures}} {
		var orphans []string
		err = s.b.List(ctx, p.prefix, func(o ObjectInfo) error {
			id, err := manifest.ParseID(strings.TrimSuffix(strings.TrimPrefix(o.Key, p.prefix), p.suffix))
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
			*p.count++
		}
	}
	return res, nil
}
