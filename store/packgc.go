package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"tms/manifest"
)

// packGC is what garbage collection did to a directory's packs.
type packGC struct {
	KeptChunks, KeptBytes   int64    // referenced chunks in packs
	FreedChunks, FreedBytes int64    // unreferenced chunks dropped, and their stored (frame) bytes
	Removed, Rewritten      int      // packs deleted whole, packs whose live chunks were copied to a new pack
	Damaged                 []string // packs whose index cannot be read, left alone
}

// collectPacks frees the packs' unreferenced chunks: a pack with no live chunk is deleted, a
// pack with some is rewritten: its live chunks are copied into a new pack, which is published
// (durable, indexed) before the old one is deleted. So gc frees every unreferenced chunk, as
// it does with chunk files, at the cost of copying the live chunks that share a pack with
// dead ones (sequential I/O, one pack at a time). A crash leaves the old pack, or both (the same chunks twice, tidied up by the next
// collection), never neither. A chunk found in more than one pack counts as live only in the
// first, and not at all if a chunk file holds it (elsewhere). held reports whether the caller still holds the store exclusively; it is asked before
// each deletion.
func (d *Dir) collectPacks(ctx context.Context, live, elsewhere map[manifest.ID]struct{}, held func() error) (packGC, error) {
	var res packGC
	if err := d.scanPacks(true); err != nil {
		return res, err
	}
	ps := &d.packs
	ps.mu.RLock()
	var names []string
	for name := range ps.packs {
		names = append(names, name)
	}
	for name := range ps.bad {
		res.Damaged = append(res.Damaged, packPrefix+name)
	}
	ps.mu.RUnlock()
	sort.Strings(names)
	sort.Strings(res.Damaged)

	// first is where each live chunk was first found: the copy that stays.
	first := map[manifest.ID]packLoc{}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		entries, _, err := d.loadPackIndex(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if errors.Is(err, ErrCorrupt) {
			res.Damaged = append(res.Damaged, packPrefix+name)
			continue
		}
		if err != nil {
			return res, err
		}
		ps.mu.RLock()
		p := ps.packs[name]
		ps.mu.RUnlock()
		if p == nil {
			p = &packInfo{name: name}
		}
		var keep []packEntry
		var liveBytes, deadBytes int64
		for _, e := range entries {
			_, ok := live[e.id]
			_, dup := first[e.id]
			if _, file := elsewhere[e.id]; ok && !dup && !file {
				first[e.id] = packLoc{p: p, off: e.off, n: e.n, crc: e.crc}
				keep = append(keep, e)
				liveBytes += int64(e.n)
			} else {
				deadBytes += int64(e.n)
			}
		}
		dead := int64(len(entries) - len(keep))
		switch {
		case dead == 0:
			res.KeptChunks += int64(len(keep))
			res.KeptBytes += liveBytes
		case len(keep) == 0:
			if err := held(); err != nil {
				return res, fmt.Errorf("garbage collection stopped: lost its lock: %w", err)
			}
			if err := d.removePack(name, entries, first); err != nil {
				return res, err
			}
			res.Removed++
			res.FreedChunks += dead
			res.FreedBytes += deadBytes
		default:
			if err := held(); err != nil {
				return res, fmt.Errorf("garbage collection stopped: lost its lock: %w", err)
			}
			_, err := d.rewritePack(name, keep)
			if err != nil {
				return res, err
			}
			ps.mu.RLock()
			for _, e := range keep {
				if loc, ok := ps.byID[e.id]; ok {
					first[e.id] = loc // now in the new pack
				}
			}
			ps.mu.RUnlock()
			if err := d.removePack(name, entries, first); err != nil {
				return res, err
			}
			res.Rewritten++
			res.KeptChunks += int64(len(keep))
			res.KeptBytes += liveBytes
			res.FreedChunks += dead
			res.FreedBytes += deadBytes
		}
	}
	return res, nil
}

// rewritePack copies the frames keep names from pack name into a new pack and publishes it,
// returning its size. A frame that does not match its checksum stops it before anything is
// published: the old pack stays, for verify to report.
func (d *Dir) rewritePack(name string, keep []packEntry) (int64, error) {
	key := packPrefix + name
	f, err := os.Open(d.packPath(name))
	if err != nil {
		return 0, d.ioErr(key, err)
	}
	defer f.Close()
	w, err := d.newPackWriter()
	if err != nil {
		return 0, err
	}
	var buf []byte
	for _, e := range keep {
		if cap(buf) < int(e.n) {
			buf = make([]byte, e.n)
		}
		buf = buf[:e.n]
		if _, err := f.ReadAt(buf, e.off); err != nil {
			w.discard()
			return 0, d.err(ErrCorrupt, "pack "+key, fmt.Errorf("reading chunk %s: %w", e.id.Short(), err))
		}
		if got := frameCRC(buf); got != e.crc {
			w.discard()
			return 0, d.err(ErrCorrupt, "pack "+key, fmt.Errorf("garbage collection stopped before rewriting it: chunk %s checksums to %08x, its index says %08x", e.id.Short(), got, e.crc))
		}
		if err := w.add(e.id, buf); err != nil {
			w.discard()
			return 0, d.ioErr(packPrefix+w.name, err)
		}
	}
	size := w.off + int64(len(w.entries))*packEntrySize + packTrailerSize
	if err := d.publishPacks([]*packWriter{w}); err != nil {
		return 0, err
	}
	return size, nil
}

// removePack deletes a pack, durably, and forgets its chunks but those found elsewhere.
func (d *Dir) removePack(name string, entries []packEntry, elsewhere map[manifest.ID]packLoc) error {
	dir := filepath.Join(d.root, packDir)
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.ioErr(packPrefix+name, err)
	}
	if err := syncDir(dir); err != nil {
		return d.ioErr(packDir, err)
	}
	ps := &d.packs
	ps.mu.Lock()
	defer ps.mu.Unlock()
	d.forgetPackLocked(name, entries, elsewhere)
	return nil
}
