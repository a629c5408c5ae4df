package store

import "testing"

type wrapped struct{ Backend }

func (w wrapped) Unwrap() Backend { return w.Backend }

// TestAsDirSeesThroughWrappers checks that a directory behind a wrapper (a region's read-through
// to its siblings) is still found, so sizes, gc and verify keep seeing its packs.
func TestAsDirSeesThroughWrappers(t *testing.T) {
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []Backend{d, wrapped{d}, wrapped{wrapped{d}}} {
		if got, ok := asDir(b); !ok || got != d {
			t.Errorf("asDir(%T) = %v, %v; want the directory", b, got, ok)
		}
	}
	if _, ok := asDir(wrapped{nil}); ok {
		t.Error("a wrapper of nothing is a directory")
	}
}
