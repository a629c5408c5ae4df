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

// GetInto is Get reading into buf when the object fits in it.
func (d *Dir) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
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
	size := fi.Size()
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	b := buf[:size]
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, d.ioErr(key, err)
	}
	return b, nil
}
