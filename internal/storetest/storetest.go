// Package storetest has the helpers tests of several packages share: a fresh directory store,
// a sample disk, an import, a file's sha256.
package storetest

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/store"
)

// Dir returns a new, initialised directory store in a temporary directory, and its path.
func Dir(t testing.TB) (*store.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	b, err := store.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := store.New(b, store.Options{})
	if err := s.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// PackDir is Dir with a store that writes packs (store.DirOptions.Packs), as tms and the
// region's server open directory stores.
func PackDir(t testing.TB) (*store.Store, *store.Dir) {
	t.Helper()
	return PackDirAt(t, filepath.Join(t.TempDir(), "store"))
}

// PackDirAt opens (creating it if need be) and initialises a directory store at root that
// writes packs: a test that opens the same store again, or as an older tms would, names it.
func PackDirAt(t testing.TB, root string) (*store.Store, *store.Dir) {
	t.Helper()
	d, err := store.NewDirWith(root, store.DirOptions{Packs: true})
	if err != nil {
		t.Fatal(err)
	}
	s := store.New(d, store.Options{})
	if err := s.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, d
}

// SpoilChunk flips a byte in the middle of chunk id's stored frame in directory store d, in
// its chunk file or its pack.
func SpoilChunk(t testing.TB, d *store.Dir, id manifest.ID) {
	t.Helper()
	p, off, n, err := d.ChunkFile(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off+n/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off+n/2); err != nil {
		t.Fatal(err)
	}
}

// SampleDisk writes a sample disk of size bytes (see sampledisk) and returns its path.
func SampleDisk(t testing.TB, size int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := sampledisk.Write(p, sampledisk.Options{Size: size, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return p
}

// Import imports the disk at path into s as name.
func Import(t testing.TB, s *store.Store, path, name string) *imageio.ImportResult {
	t.Helper()
	res, err := imageio.Import(context.Background(), s, path, imageio.ImportOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// FileSum returns the sha256 of the file at path.
func FileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}
