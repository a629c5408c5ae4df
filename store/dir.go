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
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"tms/manifest"
)

// TmpPrefix is where a Dir stages files before renaming them into place. Files left there by a
// crash are removed by garbage collection.
const TmpPrefix = "tmp/"

// Dir is a Backend on a local directory. Every write goes to a temporary file under tmp/ that is
// fsynced and then renamed into place, and the directory entry is fsynced too, so a crash leaves
// either the old object or the new one.
//
// Chunks are read from chunk files (chunks/ab/abcd…) and from packs (packs/*.pack, many chunk
// frames in one file: see packfmt.go), whichever holds them; a Dir opened with
// DirOptions.Packs writes the chunks of a batch into packs.
type Dir struct {
	root  string
	opts  DirOptions
	dirs  sync.Map // directories known to exist: path -> struct{}
	packs packSet
	// rotateBytes and rotateEntries, if not 0, stand for packRotateSize and maxPackEntries
	// (for tests).
	rotateBytes   int64
	rotateEntries int
}

// DirOptions tune a Dir.
type DirOptions struct {
	// Packs makes batches (ChunkWriter: imports, captures, copies) write their chunks into pack
	// files, one per commit, instead of one file per chunk. Chunks in packs and in chunk files
	// are read alike either way; a tms older than packs does not see packed chunks.
	Packs bool
}

var (
	_ Backend       = (*Dir)(nil)
	_ Batcher       = (*Dir)(nil)
	_ LimitedGetter = (*Dir)(nil)
)

// NewDir returns a backend on directory root, creating root (but not its parent) if needed.
func NewDir(root string) (*Dir, error) { return NewDirWith(root, DirOptions{}) }

// NewDirWith is NewDir with options.
func NewDirWith(root string, opts DirOptions) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	d := &Dir{root: abs, opts: opts}
	if err := os.Mkdir(abs, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, d.err(ErrUnavailable, "directory", err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, d.err(ErrUnavailable, "directory", err)
	} else if !fi.IsDir() {
		return nil, d.err(ErrUnavailable, "directory", fmt.Errorf("%s is not a directory", abs))
	}
	return d, nil
}

// OpenDir returns a backend on an existing directory.
func OpenDir(root string) (*Dir, error) { return OpenDirWith(root, DirOptions{}) }

// OpenDirWith is OpenDir with options.
func OpenDirWith(root string, opts DirOptions) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	d := &Dir{root: abs, opts: opts}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, d.err(ErrNotFound, "directory", err)
	}
	if err != nil {
		return nil, d.err(ErrUnavailable, "directory", err)
	}
	if !fi.IsDir() {
		return nil, d.err(ErrUnavailable, "directory", fmt.Errorf("%s is not a directory", abs))
	}
	return d, nil
}

func (d *Dir) String() string { return d.root }

// Root returns the directory.
func (d *Dir) Root() string { return d.root }

func (d *Dir) err(kind error, what string, cause error) error {
	return &Error{Kind: kind, Store: d.root, What: what, Err: cause}
}

// ioErr classifies an error from the file system.
func (d *Dir) ioErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return d.err(ErrNotFound, key, nil)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return d.err(ErrUnavailable, key, err)
}

func (d *Dir) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != key || strings.HasPrefix(key, "../") || key == ".." {
		return "", d.err(ErrUnavailable, key, errors.New("invalid object key"))
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

func (d *Dir) Get(ctx context.Context, key string) ([]byte, error) {
	return d.GetInto(ctx, key, nil)
}

// GetInto is Get reading into buf when the object fits in it.
func (d *Dir) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	id, isChunk := chunkKeyID(key)
	if isChunk {
		if b, found, err := d.getPacked(id, buf); found || err != nil {
			return b, err
		}
	}
	b, err := readFileInto(p, buf)
	if isChunk && errors.Is(err, fs.ErrNotExist) {
		// Not a chunk file: another process may have packed it since we looked at packs/.
		if err := d.scanPacks(true); err != nil {
			return nil, err
		}
		if b, found, err := d.getPacked(id, buf); found || err != nil {
			return b, err
		}
		if bad := d.damagedPacks(); len(bad) > 0 {
			return nil, d.err(ErrCorrupt, chunkWhat(id), fmt.Errorf("in no chunk file and no readable pack, and damaged pack %s may hold it: run tms store verify", strings.Join(bad, ", ")))
		}
	}
	if err != nil {
		return nil, d.ioErr(key, err)
	}
	return b, nil
}

// GetLimited is Get for an object of at most limit bytes: a larger one is ErrCorrupt, refused
// before it is read.
func (d *Dir) GetLimited(ctx context.Context, key string, limit int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, d.ioErr(key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, d.ioErr(key, err)
	}
	if fi.Size() > limit {
		return nil, TooLarge(d.root, key, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, d.ioErr(key, err)
	}
	if int64(len(b)) > limit {
		return nil, TooLarge(d.root, key, int64(len(b)), limit)
	}
	return b, nil
}

func (d *Dir) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, err
	}
	p, err := d.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	id, isChunk := chunkKeyID(key)
	if isChunk {
		if o, found, err := d.statPacked(key, id); found || err != nil {
			return o, err
		}
	}
	fi, err := os.Stat(p)
	if isChunk && errors.Is(err, fs.ErrNotExist) {
		// Look again if packs/ changed since we last listed it. A chunk another process packed
		// in the same instant may still be missed: the caller then stores it again, which
		// garbage collection tidies up; Get looks harder.
		if err := d.scanPacks(false); err != nil {
			return ObjectInfo{}, err
		}
		if o, found, err := d.statPacked(key, id); found || err != nil {
			return o, err
		}
	}
	if err != nil {
		return ObjectInfo{}, d.ioErr(key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, d.err(ErrUnavailable, key, errors.New("not a regular file"))
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes the file under key. A chunk that a pack holds stays there until garbage
// collection rewrites or removes the pack.
func (d *Dir) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.ioErr(key, err)
	}
	return nil
}

func (d *Dir) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	// Walk the deepest directory the prefix names, then filter by the rest of the prefix.
	dir := prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir = prefix[:i]
	} else {
		dir = ""
	}
	start := d.root
	if dir != "" {
		p, err := d.path(dir)
		if err != nil {
			return err
		}
		start = p
	}
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return d.ioErr(prefix, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.root, p)
		key := filepath.ToSlash(rel)
		if e.IsDir() {
			if key == strings.TrimSuffix(TmpPrefix, "/") && !strings.HasPrefix(prefix, TmpPrefix) {
				return fs.SkipDir
			}
			return nil
		}
		if !e.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walked
		}
		if err != nil {
			return d.ioErr(key, err)
		}
		return fn(ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	return err
}

func (d *Dir) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	final, err := d.path(key)
	if err != nil {
		return err
	}
	tmp, err := d.writeTemp(key, data, true)
	if err != nil {
		return err
	}
	if err := d.mkdirFor(final); err != nil {
		os.Remove(tmp)
		return d.ioErr(key, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return d.ioErr(key, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return d.ioErr(key, err)
	}
	return nil
}

// writeTemp writes data to a new file under tmp/ and returns its path.
func (d *Dir) writeTemp(key string, data []byte, fsync bool) (string, error) {
	tmpDir := filepath.Join(d.root, "tmp")
	if err := d.mkdir(tmpDir); err != nil {
		return "", d.ioErr(key, err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	name := filepath.Join(tmpDir, fmt.Sprintf("%s.%d.%s", path.Base(key), os.Getpid(), hex.EncodeToString(rnd[:])))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", d.ioErr(key, err)
	}
	_, err = f.Write(data)
	if err == nil && fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", d.ioErr(key, err)
	}
	return name, nil
}

func (d *Dir) mkdirFor(file string) error { return d.mkdir(filepath.Dir(file)) }

func (d *Dir) mkdir(dir string) error {
	if _, ok := d.dirs.Load(dir); ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// A new directory's own entry must reach the disk before files in it can be relied on.
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	d.dirs.Store(dir, struct{}{})
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// NewBatch returns a batch whose puts are written at once but made durable and renamed into
// place only at Commit, with a single syncfs for the whole batch.
func (d *Dir) NewBatch() Batch { return &dirBatch{d: d} }

type dirBatch struct {
	d       *Dir
	mu      sync.Mutex
	pending []staged
	// With DirOptions.Packs, chunks go into packs: cur is being written, full are finished
	// (past packRotateSize) and wait for Commit. werr is the first write error since the last
	// Commit or Abort: a pack with a failed write cannot be trusted, so Commit fails.
	cur  *packWriter
	full []*packWriter
	werr error
}

type staged struct{ key, tmp, final string }

func (b *dirBatch) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	final, err := b.d.path(key)
	if err != nil {
		return err
	}
	if id, ok := chunkKeyID(key); ok && b.d.opts.Packs {
		return b.putPacked(id, key, data)
	}
	tmp, err := b.d.writeTemp(key, data, false)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.pending = append(b.pending, staged{key, tmp, final})
	b.mu.Unlock()
	return nil
}

// putPacked appends a chunk frame to the batch's current pack, unless a pack holds the chunk
// already (as putting a chunk file that is there changes nothing).
func (b *dirBatch) putPacked(id manifest.ID, key string, frame []byte) error {
	if _, ok, err := b.d.lookupPacked(id); err != nil {
		return err
	} else if ok {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.werr != nil {
		return b.werr
	}
	if b.cur == nil {
		w, err := b.d.newPackWriter()
		if err != nil {
			return err
		}
		b.cur = w
	}
	if err := b.cur.add(id, frame); err != nil {
		b.werr = b.d.ioErr(key, err)
		return b.werr
	}
	maxBytes, maxEntries := int64(packRotateSize), maxPackEntries
	if b.d.rotateBytes > 0 {
		maxBytes = b.d.rotateBytes
	}
	if b.d.rotateEntries > 0 {
		maxEntries = b.d.rotateEntries
	}
	if b.cur.off >= maxBytes || len(b.cur.entries) >= maxEntries {
		b.full = append(b.full, b.cur)
		b.cur = nil
	}
	return nil
}

// takePacks returns the packs of the batch and the write error, and starts afresh.
func (b *dirBatch) takePacks() ([]*packWriter, error) {
	ws := b.full
	if b.cur != nil {
		ws = append(ws, b.cur)
	}
	werr := b.werr
	b.full, b.cur, b.werr = nil, nil, nil
	return ws, werr
}

func (b *dirBatch) Commit(ctx context.Context) error {
	b.mu.Lock()
	pending := b.pending
	b.pending = nil
	packs, werr := b.takePacks()
	b.mu.Unlock()
	if werr != nil {
		for _, w := range packs {
			w.discard()
		}
		for _, p := range pending {
			os.Remove(p.tmp)
		}
		return werr
	}
	if err := b.d.publishPacks(packs); err != nil {
		for _, p := range pending {
			os.Remove(p.tmp)
		}
		return err
	}
	if len(pending) == 0 {
		return nil
	}
	fail := func(key string, err error) error {
		for _, p := range pending {
			os.Remove(p.tmp)
		}
		return b.d.ioErr(key, err)
	}
	// The data of every staged file reaches the disk before any of them gets its final name, so
	// a file under its final name always holds all of its bytes.
	if err := syncFS(b.d.root, pending); err != nil {
		return fail(pending[0].key, err)
	}
	dirs := map[string]struct{}{}
	for i, p := range pending {
		if err := b.d.mkdirFor(p.final); err != nil {
			return fail(p.key, err)
		}
		if err := os.Rename(p.tmp, p.final); err != nil {
			for _, q := range pending[i:] {
				os.Remove(q.tmp)
			}
			return b.d.ioErr(p.key, err)
		}
		dirs[filepath.Dir(p.final)] = struct{}{}
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil {
			return b.d.ioErr(pending[0].key, err)
		}
	}
	return nil
}

func (b *dirBatch) Abort() {
	b.mu.Lock()
	pending := b.pending
	b.pending = nil
	packs, _ := b.takePacks()
	b.mu.Unlock()
	for _, w := range packs {
		w.discard()
	}
	for _, p := range pending {
		os.Remove(p.tmp)
	}
}

// syncFS flushes the file system that holds root, falling back to one fsync per file where
// syncfs(2) is not available.
func syncFS(root string, files []staged) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	err = unix.Syncfs(int(f.Fd()))
	f.Close()
	if err == nil {
		return nil
	}
	for _, p := range files {
		g, err := os.OpenFile(p.tmp, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		err = g.Sync()
		g.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// RemoveStaleTemps removes files under tmp/ older than age: leftovers of writers that crashed.
func (d *Dir) RemoveStaleTemps(ctx context.Context, age time.Duration) (int, error) {
	n := 0
	err := d.List(ctx, TmpPrefix, func(o ObjectInfo) error {
		if time.Since(o.ModTime) > age {
			if err := d.Delete(ctx, o.Key); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
