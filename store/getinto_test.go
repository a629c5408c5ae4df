package store

import (
	"context"
	"errors"
	"testing"
)

func TestDirGetIntoReusesTheBufferWhenItFits(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	if err := d.Put(ctx, "chunks/ab/x", []byte("frame bytes")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 64)
	b, err := d.GetInto(ctx, "chunks/ab/x", buf)
	if err != nil || string(b) != "frame bytes" || &b[0] != &buf[:1][0] {
		t.Fatalf("GetInto with room = %q, %v (reused: %v)", b, err, err == nil && &b[0] == &buf[:1][0])
	}
	small := make([]byte, 0, 4)
	if b, err := d.GetInto(ctx, "chunks/ab/x", small); err != nil || string(b) != "frame bytes" {
		t.Fatalf("GetInto without room = %q, %v", b, err)
	}
	if _, err := d.GetInto(ctx, "chunks/ab/missing", buf); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetInto of a missing object: %v, want ErrNotFound", err)
	}
}
