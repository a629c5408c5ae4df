package store

import (
	"context"
	"io"
	"os"
)

// IntoGetter is implemented by backends that can read an object into a buffer the caller
// reuses: a server streaming thousands of chunk frames reads each into the same buffer
// instead of allocating one per frame.
type IntoGetter interface {
	// GetInto returns the whole object, read into buf if it fits (else into a new slice).
	GetInto(ctx context.Context, key string, buf []byte) ([]byte, error)
}

var _ IntoGetter = (*Dir)(nil)

// sized returns buf resliced to n bytes if it has the room, else a new slice of n bytes.
func sized(buf []byte, n int64) []byte {
	if int64(cap(buf)) < n {
		return make([]byte, n)
	}
	return buf[:n]
}

// readFileInto reads the file at p, into buf if it fits. Its errors are os's, for ioErr.
func readFileInto(p string, buf []byte) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := sized(buf, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}
