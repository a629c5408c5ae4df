package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"tms/manifest"
)

// packSet is a Dir's in-memory index of its packs: which pack holds each packed chunk, and
// where. It is loaded the first time a chunk is looked up, and looked at again when a chunk
// is missing from it (another process may have written or collected packs since).
//
// Memory: one map entry per packed chunk, a 32-byte key and a 24-byte location; with the map's
// own overhead, 128 bytes an entry measured at 2^20 entries (just after the map grew; about 70
// just before): 1 million chunks (256 GiB of distinct 256 KiB chunks) cost about 130 MB.
type packSet struct {
	scanMu sync.Mutex // one scan at a time

	mu     sync.RWMutex
	loaded bool
	byID   map[manifest.ID]packLoc
	packs  map[string]*packInfo // by file name
	bad    map[string]badPack   // packs whose index could not be read, by file name
	dirMod time.Time            // modification time of packs/ when last listed
}

// packInfo is one pack file.
type packInfo struct {
	name    string // file name under packs/
	size    int64
	mod     time.Time
	entries int
}

func (p *packInfo) key() string { return packPrefix + p.name }

// packLoc is where a chunk's frame is.
type packLoc struct {
	p   *packInfo
	off int64
	n   uint32
	crc uint32
}

type badPack struct {
	size int64
	mod  time.Time
	err  error
}

// chunkKeyID returns the chunk id a key names if it is a chunk key as ChunkKey makes them.
func chunkKeyID(key string) (manifest.ID, bool) {
	if len(key) != len("chunks/ab/")+2*manifest.IDLen || !strings.HasPrefix(key, "chunks/") {
		return manifest.ID{}, false
	}
	id, err := manifest.ParseID(key[len("chunks/ab/"):])
	if err != nil || ChunkKey(id) != key {
		return manifest.ID{}, false
	}
	return id, true
}

func (d *Dir) packPath(name string) string { return filepath.Join(d.root, packDir, name) }

// lookupPacked finds chunk id in the loaded packs, loading them first if they are not yet.
func (d *Dir) lookupPacked(id manifest.ID) (packLoc, bool, error) {
	ps := &d.packs
	ps.mu.RLock()
	loaded := ps.loaded
	loc, ok := ps.byID[id]
	ps.mu.RUnlock()
	if loaded {
		return loc, ok, nil
	}
	if err := d.scanPacks(true); err != nil {
		return packLoc{}, false, err
	}
	ps.mu.RLock()
	loc, ok = ps.byID[id]
	ps.mu.RUnlock()
	return loc, ok, nil
}

// scanPacks brings the in-memory index up to date with packs/: it loads packs it does not
// know and forgets packs that are gone. Unless force, it does nothing when packs/ has not
// changed since the last scan.
func (d *Dir) scanPacks(force bool) error {
	ps := &d.packs
	ps.scanMu.Lock()
	defer ps.scanMu.Unlock()
	dir := filepath.Join(d.root, packDir)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		ps.mu.Lock()
		ps.loaded = true
		ps.mu.Unlock()
		return nil
	}
	if err != nil {
		return d.ioErr(packDir, err)
	}
	ps.mu.RLock()
	same := ps.loaded && fi.ModTime().Equal(ps.dirMod)
	ps.mu.RUnlock()
	if same && !force {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return d.ioErr(packDir, err)
	}
	present := make(map[string]bool, len(ents))
	var names []string
	for _, e := range ents {
		if name := e.Name(); e.Type().IsRegular() && strings.HasSuffix(name, packSuffix) {
			present[name] = true
			names = append(names, name)
		}
	}
	sort.Strings(names)
	ps.mu.Lock()
	for name := range ps.packs {
		if !present[name] {
			// Collected by another process. Its chunks may be in another pack we know (the
			// one they were copied to, or a second copy): start the index afresh rather than
			// lose them.
			ps.packs, ps.byID = nil, nil
			break
		}
	}
	for name := range ps.bad {
		if !present[name] {
			delete(ps.bad, name)
		}
	}
	ps.mu.Unlock()
	for _, name := range names {
		ps.mu.RLock()
		_, known := ps.packs[name]
		bad, isBad := ps.bad[name]
		ps.mu.RUnlock()
		if known {
			continue
		}
		entries, fi, err := d.loadPackIndex(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // collected while we listed
		}
		if errors.Is(err, ErrCorrupt) {
			if isBad && bad.size == fi.Size() && bad.mod.Equal(fi.ModTime()) {
				continue
			}
			ps.mu.Lock()
			if ps.bad == nil {
				ps.bad = map[string]badPack{}
			}
			ps.bad[name] = badPack{size: fi.Size(), mod: fi.ModTime(), err: err}
			ps.mu.Unlock()
			continue
		}
		if err != nil {
			return err
		}
		ps.mu.Lock()
		delete(ps.bad, name)
		ps.mu.Unlock()
		d.addPack(&packInfo{name: name, size: fi.Size(), mod: fi.ModTime()}, entries)
	}
	ps.mu.Lock()
	ps.loaded = true
	ps.dirMod = fi.ModTime()
	ps.mu.Unlock()
	return nil
}

// addPack puts a pack's entries into the index, where they take the place of any other
// location of the same chunks. A pack already known is left as it is.
func (d *Dir) addPack(p *packInfo, entries []packEntry) {
	ps := &d.packs
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if _, ok := ps.packs[p.name]; ok {
		return
	}
	if ps.packs == nil {
		ps.packs = map[string]*packInfo{}
		ps.byID = map[manifest.ID]packLoc{}
	}
	p.entries = len(entries)
	ps.packs[p.name] = p
	for _, e := range entries {
		ps.byID[e.id] = packLoc{p: p, off: e.off, n: e.n, crc: e.crc}
	}
}

// forgetPackLocked forgets a pack that was removed, with ps.mu held. Its chunks that another
// pack also holds (elsewhere[id], if that pack is still known) are pointed there.
func (d *Dir) forgetPackLocked(name string, entries []packEntry, elsewhere map[manifest.ID]packLoc) {
	ps := &d.packs
	delete(ps.packs, name)
	for _, e := range entries {
		cur, ok := ps.byID[e.id]
		if !ok || cur.p.name != name {
			continue
		}
		if alt, ok := elsewhere[e.id]; ok && alt.p.name != name && ps.packs[alt.p.name] == alt.p {
			ps.byID[e.id] = alt
		} else {
			delete(ps.byID, e.id)
		}
	}
}

// loadPackIndex reads and checks a pack's header, trailer and index. A damaged pack is an
// ErrCorrupt naming it; a pack that is gone is fs.ErrNotExist.
func (d *Dir) loadPackIndex(name string) ([]packEntry, fs.FileInfo, error) {
	key := packPrefix + name
	f, err := os.Open(d.packPath(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, d.ioErr(key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, d.ioErr(key, err)
	}
	size := fi.Size()
	corrupt := func(err error) ([]packEntry, fs.FileInfo, error) {
		return nil, fi, d.err(ErrCorrupt, "pack "+key, err)
	}
	if size < int64(packHeaderSize+packTrailerSize) {
		return corrupt(fmt.Errorf("%w: %d bytes, too short (truncated)", errPackFormat, size))
	}
	var head [packHeaderSize]byte
	if _, err := f.ReadAt(head[:], 0); err != nil {
		return nil, nil, d.ioErr(key, err)
	}
	if string(head[:]) != packMagic {
		return corrupt(fmt.Errorf("%w: no pack header", errPackFormat))
	}
	var t [packTrailerSize]byte
	if _, err := f.ReadAt(t[:], size-packTrailerSize); err != nil {
		return nil, nil, d.ioErr(key, err)
	}
	off, n, crc, err := parsePackTrailer(t[:], size)
	if err != nil {
		return corrupt(err)
	}
	idx := make([]byte, n*packEntrySize)
	if _, err := f.ReadAt(idx, off); err != nil {
		if errors.Is(err, io.EOF) {
			return corrupt(fmt.Errorf("%w: truncated index", errPackFormat))
		}
		return nil, nil, d.ioErr(key, err)
	}
	entries, err := parsePackIndex(idx, n, off, crc)
	if err != nil {
		return corrupt(err)
	}
	return entries, fi, nil
}

// readPacked reads and checks one frame. A pack that is gone is fs.ErrNotExist (the caller
// looks again: garbage collection may have moved the chunk to another pack).
func (d *Dir) readPacked(id manifest.ID, loc packLoc, buf []byte) ([]byte, error) {
	f, err := os.Open(d.packPath(loc.p.name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, d.ioErr(loc.p.key(), err)
	}
	defer f.Close()
	b := sized(buf, int64(loc.n))
	if _, err := f.ReadAt(b, loc.off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.err(ErrCorrupt, chunkWhat(id), fmt.Errorf("pack %s is truncated: frame at %d+%d is past its end", loc.p.key(), loc.off, loc.n))
		}
		return nil, d.ioErr(loc.p.key(), err)
	}
	if got := frameCRC(b); got != loc.crc {
		return nil, d.err(ErrCorrupt, chunkWhat(id), fmt.Errorf("pack %s: frame at %d checksums to %08x, its index says %08x", loc.p.key(), loc.off, got, loc.crc))
	}
	return b, nil
}

// getPacked returns chunk id's frame from a pack, read into buf if it fits; found is false if
// no pack holds it.
func (d *Dir) getPacked(id manifest.ID, buf []byte) (frame []byte, found bool, err error) {
	for try := 0; try < 2; try++ {
		loc, ok, err := d.lookupPacked(id)
		if err != nil || !ok {
			return nil, false, err
		}
		b, err := d.readPacked(id, loc, buf)
		if errors.Is(err, fs.ErrNotExist) {
			if err := d.scanPacks(true); err != nil { // collected: look where it went
				return nil, false, err
			}
			continue
		}
		return b, true, err
	}
	return nil, false, nil
}

// statPacked returns a packed chunk's stored size and its pack's time.
func (d *Dir) statPacked(key string, id manifest.ID) (ObjectInfo, bool, error) {
	loc, ok, err := d.lookupPacked(id)
	if err != nil || !ok {
		return ObjectInfo{}, false, err
	}
	return ObjectInfo{Key: key, Size: int64(loc.n), ModTime: loc.p.mod}, true, nil
}

// packWriter is a pack being written under tmp/.
type packWriter struct {
	f       *os.File
	tmp     string
	name    string
	off     int64
	entries []packEntry
	ids     map[manifest.ID]struct{}
}

func (d *Dir) newPackWriter() (*packWriter, error) {
	tmpDir := filepath.Join(d.root, "tmp")
	if err := d.mkdir(tmpDir); err != nil {
		return nil, d.ioErr(packDir, err)
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	name := hex.EncodeToString(rnd[:]) + packSuffix
	tmp := filepath.Join(tmpDir, fmt.Sprintf("%s.%d", name, os.Getpid()))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, d.ioErr(packPrefix+name, err)
	}
	if _, err := f.Write([]byte(packMagic)); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, d.ioErr(packPrefix+name, err)
	}
	return &packWriter{f: f, tmp: tmp, name: name, off: int64(packHeaderSize), ids: map[manifest.ID]struct{}{}}, nil
}

// add appends a frame; a chunk the pack already holds is skipped.
func (w *packWriter) add(id manifest.ID, frame []byte) error {
	if _, ok := w.ids[id]; ok {
		return nil
	}
	if len(frame) == 0 || len(frame) > maxPackFrame {
		return fmt.Errorf("chunk %s: a frame of %d bytes does not go in a pack (1 to %d)", id.Short(), len(frame), maxPackFrame)
	}
	if _, err := w.f.Write(frame); err != nil {
		return err
	}
	w.entries = append(w.entries, packEntry{id: id, off: w.off, n: uint32(len(frame)), crc: frameCRC(frame)})
	w.ids[id] = struct{}{}
	w.off += int64(len(frame))
	return nil
}

// finish writes the index and makes the file durable; it stays under tmp/.
func (w *packWriter) finish() error {
	_, err := w.f.Write(appendPackIndex(nil, w.entries, w.off))
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	return err
}

func (w *packWriter) discard() {
	if w.f != nil {
		w.f.Close()
	}
	os.Remove(w.tmp)
}

// publishPacks finishes packs, renames them into packs/ and adds them to the index. Each pack's
// frames and index are durable before it gets its name, and the names are durable before this
// returns: from then on the chunks count as present. On an error every pack not yet published
// is removed.
func (d *Dir) publishPacks(ws []*packWriter) error {
	if len(ws) == 0 {
		return nil
	}
	fail := func(i int, key string, err error) error {
		for _, w := range ws[i:] {
			w.discard()
		}
		return d.ioErr(key, err)
	}
	dir := filepath.Join(d.root, packDir)
	if err := d.mkdir(dir); err != nil {
		return fail(0, packDir, err)
	}
	for _, w := range ws {
		if err := w.finish(); err != nil {
			return fail(0, packPrefix+w.name, err) // none is published yet
		}
	}
	infos := make([]*packInfo, len(ws))
	for i, w := range ws {
		final := filepath.Join(dir, w.name)
		if err := os.Rename(w.tmp, final); err != nil {
			return fail(i, packPrefix+w.name, err)
		}
		infos[i] = &packInfo{name: w.name, size: w.off + int64(len(w.entries))*packEntrySize + packTrailerSize, mod: time.Now()}
	}
	if err := syncDir(dir); err != nil {
		return d.ioErr(packDir, err)
	}
	for i, w := range ws {
		if fi, err := os.Stat(filepath.Join(dir, w.name)); err == nil {
			infos[i].mod = fi.ModTime()
		}
		d.addPack(infos[i], w.entries)
	}
	return nil
}

// PackedChunk is a chunk held in a pack.
type PackedChunk struct {
	ID   manifest.ID
	Size int64
	Pack string // the pack's key: packs/<name>.pack
}

// PackProblem is a pack whose index cannot be read: its chunks are unknown.
type PackProblem struct {
	Pack string
	Err  error
}

// PackedChunks lists the chunks held in packs, by pack, and the packs that are damaged. It
// looks at packs/ first, so it sees what other processes wrote.
func (d *Dir) PackedChunks(ctx context.Context, fn func(PackedChunk) error) ([]PackProblem, error) {
	if err := d.scanPacks(true); err != nil {
		return nil, err
	}
	ps := &d.packs
	ps.mu.RLock()
	var packs []*packInfo
	for _, p := range ps.packs {
		packs = append(packs, p)
	}
	var bad []PackProblem
	for name, b := range ps.bad {
		bad = append(bad, PackProblem{Pack: packPrefix + name, Err: b.err})
	}
	ps.mu.RUnlock()
	sort.Slice(packs, func(i, j int) bool { return packs[i].name < packs[j].name })
	sort.Slice(bad, func(i, j int) bool { return bad[i].Pack < bad[j].Pack })
	for _, p := range packs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		entries, _, err := d.loadPackIndex(p.name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if errors.Is(err, ErrCorrupt) {
			bad = append(bad, PackProblem{Pack: p.key(), Err: err})
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if err := fn(PackedChunk{ID: e.id, Size: int64(e.n), Pack: p.key()}); err != nil {
				return nil, err
			}
		}
	}
	return bad, nil
}

// damagedPacks names the packs whose index could not be read, at most a few.
func (d *Dir) damagedPacks() []string {
	ps := &d.packs
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	var names []string
	for name := range ps.bad {
		names = append(names, packPrefix+name)
	}
	sort.Strings(names)
	if len(names) > 3 {
		names = append(names[:3], "…")
	}
	return names
}

// ChunkFile says where chunk id's frame is on disk: the file, and the frame's offset and length
// in it (a chunk file: 0 and its size). For tests and people who look at a store by hand.
func (d *Dir) ChunkFile(ctx context.Context, id manifest.ID) (path string, off, n int64, err error) {
	key := ChunkKey(id)
	if _, err := d.Stat(ctx, key); err != nil {
		return "", 0, 0, err
	}
	if loc, ok, err := d.lookupPacked(id); err != nil {
		return "", 0, 0, err
	} else if ok {
		return d.packPath(loc.p.name), loc.off, int64(loc.n), nil
	}
	p, _ := d.path(key)
	fi, err := os.Stat(p)
	if err != nil {
		return "", 0, 0, d.ioErr(key, err)
	}
	return p, 0, fi.Size(), nil
}
