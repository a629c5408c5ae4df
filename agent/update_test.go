package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"tms/agentwire"
	"tms/manifest"
)

func testManifest(t testing.TB, parent manifest.ID, chunks ...string) (*manifest.Manifest, []byte) {
	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, DiskSize: int64(len(chunks)) * manifest.MinChunkSize,
		ChunkSize: manifest.MinChunkSize, Parent: parent, Meta: manifest.Meta{Name: "lab", Created: time.Unix(1700000000, 0).UTC()}}
	for _, c := range chunks {
		m.Chunks = append(m.Chunks, manifest.BLAKE3.Sum([]byte(c)))
	}
	b, err := manifest.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, b
}

// FuzzBaseManifest answers an update's request for its base manifest with arbitrary bytes, as a
// rogue server could: the agent takes them only if they hash to the base id the task named and
// have the target's geometry, and otherwise fails permanently (nothing is written), never panics.
func FuzzBaseManifest(f *testing.F) {
	target, _ := testManifest(f, manifest.ID{}, "a", "B")
	base, good := testManifest(f, manifest.ID{}, "a", "b")
	_, other := testManifest(f, manifest.ID{}, "a", "b", "c")
	baseID := manifest.VersionID(base.Hash, good)
	f.Add(good)
	f.Add(other)
	f.Add([]byte(`{"format":"tms.image.v1"}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		c := &Client{Region: u, MAC: "52:54:00:12:34:56", Token: "t"}
		a := &Agent{}
		m, err := a.baseManifest(context.Background(), c, baseID, agentwire.TaskInfo{Version: "target"}, target)
		if err == nil {
			if manifest.VersionID(m.Hash, body) != baseID || m.ChunkSize != target.ChunkSize || m.DiskSize != target.DiskSize {
				t.Fatalf("took a base manifest that is not the one named: %q", body)
			}
			return
		}
		if !Permanent(err) || !errors.Is(err, errBaseUnusable) {
			t.Fatalf("body %q: %v; want a permanent errBaseUnusable", body, err)
		}
	})
}

func TestChangedChunks(t *testing.T) {
	base, _ := testManifest(t, manifest.ID{}, "a", "b", "c", "d")
	target, _ := testManifest(t, manifest.ID{}, "a", "B", "c", "D")
	got, n := ChangedChunks(base, target)
	if len(got) != 2 || got[0] != 1 || got[1] != 3 || n != 2*manifest.MinChunkSize {
		t.Fatalf("changed %v (%d bytes)", got, n)
	}
	if got, n := ChangedChunks(base, base); got == nil || len(got) != 0 || n != 0 {
		t.Fatalf("a version against itself: %v, %d bytes; want an empty, not nil, list", got, n)
	}
}
