// Package atomicfile writes files that are either wholly there or not at all: a crash or a full
// disk never leaves a half-written key, kernel or initrd in place.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write copies r to path through a temporary file in the same directory, with mode, synced to
// disk, then renamed over path.
func Write(path string, r io.Reader, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
