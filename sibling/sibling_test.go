package sibling_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tms/imageio"
	"tms/internal/promtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/metrics"
	"tms/sibling"
	"tms/signing"
	"tms/store"
	"tms/transfer"
)

// lender is a sibling server: its own store behind the sibling routes, on loopback.
type lender struct {
	st     *store.Store
	dir    *store.Dir
	srv    *httptest.Server
	served atomic.Int64
}

func newLender(t *testing.T, secret []byte, wrap func(http.Handler) http.Handler) *lender {
	t.Helper()
	st, dir := storetest.PackDir(t)
	l := &lender{st: st, dir: dir}
	mux := http.NewServeMux()
	(&sibling.Handler{Backend: st.Backend(), Secret: secret}).Routes(mux)
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(h)
	}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.served.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(l.srv.Close)
	return l
}

// signedImage imports a small disk into st and signs it with key, as central would.
func signedImage(t *testing.T, st *store.Store, key *signing.PrivateKey) *imageio.ImportResult {
	t.Helper()
	res := storetest.Import(t, st, storetest.SampleDisk(t, 8<<20, 7), "lab")
	if err := st.PutSignature(context.Background(), res.Version.ID, key.SignVersion(res.Version.ID)); err != nil {
		t.Fatal(err)
	}
	return res
}

func chunks(m *manifest.Manifest) []manifest.ID {
	var out []manifest.ID
	for _, id := range m.Chunks {
		if !id.IsZero() {
			out = append(out, id)
		}
	}
	return out
}

var secret = []byte("0123456789abcdef0123456789abcdef")

// TestReadThroughTakesWhatASiblingHolds: a server whose store lacks a version reads its
// manifest (with central's signature) and its chunks from the sibling that holds it, checked,
// and keeps them; a dead sibling ahead of it in the list is passed over.
func TestReadThroughTakesWhatASiblingHolds(t *testing.T) {
	ctx := context.Background()
	key, _ := signing.GenerateKey()
	src := newLender(t, secret, nil)
	img := signedImage(t, src.st, key)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	m := metrics.NewRegion(metrics.RegionSources{})
	own, _ := storetest.PackDir(t)
	f := &sibling.Fetcher{Siblings: sibling.Static(sibling.Sibling{ID: "dead", Endpoint: deadURL}, sibling.Sibling{ID: "b", Endpoint: src.srv.URL}),
		Secret: secret, From: "a", CentralKey: key.Public(), Metrics: m}
	st := store.New(sibling.ReadThrough(own.Backend(), f), store.Options{})

	here, err := st.HasVersion(ctx, img.Version.ID)
	if err != nil || !here {
		t.Fatalf("HasVersion of a version a sibling holds: %v, %v", here, err)
	}
	v, err := st.GetManifest(ctx, img.Version.ID)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := st.GetSignature(ctx, v.ID)
	if err != nil || key.Public().VerifyVersion(v.ID, sig) != nil {
		t.Fatalf("signature taken with the manifest: %v", err)
	}
	ids := chunks(v.Manifest)
	for _, id := range ids {
		if _, err := st.GetChunk(ctx, v.Manifest.Hash, id, nil); err != nil {
			t.Fatalf("chunk %s: %v", id.Short(), err)
		}
	}
	// Kept: the server's own store now holds all of it.
	for _, id := range ids {
		if ok, err := own.HasChunk(ctx, id); !ok || err != nil {
			t.Fatalf("chunk %s not kept: %v %v", id.Short(), ok, err)
		}
	}
	if ok, _ := own.HasVersion(ctx, v.ID); !ok {
		t.Fatal("manifest not kept")
	}
	fams := promtest.Gather(t, m.Registry())
	if got := promtest.Value(fams, "tms_chunks_verified_total", "path", "sibling"); int(got) != len(ids) {
		t.Errorf("tms_chunks_verified_total{path=sibling} = %v, want %d", got, len(ids))
	}
	// Read again: from the server's own store, the sibling not asked.
	before := src.served.Load()
	if _, err := st.GetChunk(ctx, v.Manifest.Hash, ids[0], nil); err != nil {
		t.Fatal(err)
	}
	if src.served.Load() != before {
		t.Error("a chunk the server holds was asked of its sibling")
	}
}

// TestReadThroughSkipsABadSibling: a sibling that sends flipped bytes for a chunk, or a manifest
// signed by another key, is skipped, counted and the next one asked; none left is not found.
func TestReadThroughSkipsABadSibling(t *testing.T) {
	ctx := context.Background()
	key, _ := signing.GenerateKey()
	other, _ := signing.GenerateKey()
	good := newLender(t, secret, nil)
	img := signedImage(t, good.st, key)
	ids := chunks(img.Version.Manifest)

	// bad holds the same image and a signature by another key, and sends other bytes for
	// ids[0] (a frame that decompresses, to bytes of another hash).
	liar := store.NewCodec(0).Compress(nil, []byte("not the chunk asked for"))
	bad := newLender(t, secret, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/chunks/"+ids[0].String()) {
				w.Write(liar)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	signedImage(t, bad.st, other)

	m := metrics.NewRegion(metrics.RegionSources{})
	own, _ := storetest.PackDir(t)
	f := &sibling.Fetcher{Siblings: sibling.Static(sibling.Sibling{ID: "bad", Endpoint: bad.srv.URL}, sibling.Sibling{ID: "good", Endpoint: good.srv.URL}),
		Secret: secret, From: "a", CentralKey: key.Public(), Metrics: m}
	st := store.New(sibling.ReadThrough(own.Backend(), f), store.Options{})
	v, err := st.GetManifest(ctx, img.Version.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetChunk(ctx, v.Manifest.Hash, ids[0], nil); err != nil {
		t.Fatalf("the good sibling's chunk after the bad one's: %v", err)
	}
	fams := promtest.Gather(t, m.Registry())
	if refused := promtest.Value(fams, "tms_chunks_refused_total", "path", "sibling", "reason", "hash_mismatch"); refused != 1 {
		t.Errorf("refused chunks from the bad sibling: %v, want 1", refused)
	}

	// Only the bad sibling: its chunk is not taken, and the answer is not found.
	own2, _ := storetest.PackDir(t)
	f2 := &sibling.Fetcher{Siblings: sibling.Static(sibling.Sibling{ID: "bad", Endpoint: bad.srv.URL}), Secret: secret, CentralKey: key.Public()}
	st2 := store.New(sibling.ReadThrough(own2.Backend(), f2), store.Options{})
	if _, err := st2.GetChunk(ctx, v.Manifest.Hash, ids[0], nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a chunk only a bad sibling sends: %v, want not found", err)
	}
	if ok, _ := own2.HasChunk(ctx, ids[0]); ok {
		t.Error("the bad sibling's chunk was stored")
	}
	if _, err := st2.GetManifest(ctx, v.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a manifest only signed by another key: %v, want not found", err)
	}
	// The good chunks of the bad sibling are still taken.
	if _, err := st2.GetChunk(ctx, v.Manifest.Hash, ids[1], nil); err != nil {
		t.Errorf("a good chunk of the bad sibling: %v", err)
	}
}

// TestHandlerRefusesWithoutAToken: the sibling routes answer only a token made with the
// region's secret, for that request, not expired; a terminal's bearer token is not one.
func TestHandlerRefusesWithoutAToken(t *testing.T) {
	key, _ := signing.GenerateKey()
	l := newLender(t, secret, nil)
	img := signedImage(t, l.st, key)
	path := "/v1/sibling/manifests/" + img.Version.ID.String()
	now := time.Now()
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a terminal's bearer token", "Bearer abc", http.StatusUnauthorized},
		{"another region's secret", sibling.Sign([]byte("another secret, 32 bytes long!!!"), "a", "GET", path, now), http.StatusUnauthorized},
		{"another path's token", sibling.Sign(secret, "a", "GET", "/v1/sibling/signatures/"+img.Version.ID.String(), now), http.StatusUnauthorized},
		{"expired", sibling.Sign(secret, "a", "GET", path, now.Add(-10*time.Minute)), http.StatusUnauthorized},
		{"good", sibling.Sign(secret, "a", "GET", path, now), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", l.srv.URL+path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// TestFetcherBoundsWhatASiblingSends: an answer over a chunk's frame size is refused before it
// is read whole, and the fetch goes on to the next sibling.
func TestFetcherBoundsWhatASiblingSends(t *testing.T) {
	ctx := context.Background()
	key, _ := signing.GenerateKey()
	good := newLender(t, secret, nil)
	img := signedImage(t, good.st, key)
	id := chunks(img.Version.Manifest)[0]
	var sent atomic.Int64
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: endless bytes.
		buf := []byte(strings.Repeat("x", 1<<16))
		for i := 0; i < 1024; i++ {
			n, err := w.Write(buf)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer huge.Close()
	f := &sibling.Fetcher{Siblings: sibling.Static(sibling.Sibling{ID: "huge", Endpoint: huge.URL}, sibling.Sibling{ID: "good", Endpoint: good.srv.URL}),
		Secret: secret, CentralKey: key.Public()}
	frame, err := f.Chunk(ctx, id)
	if err != nil || len(frame) == 0 {
		t.Fatalf("chunk after an endless sibling: %d bytes, %v", len(frame), err)
	}
}

func TestTokenChecks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := sibling.Sign(secret, "srv-1", "GET", "/v1/sibling/chunks/x", now)
	for _, tc := range []struct {
		name   string
		header string
		at     time.Time
		ok     bool
	}{
		{"fresh", good, now, true},
		{"within skew after expiry", good, now.Add(sibling.TokenTTL + 30*time.Second), true},
		{"expired", good, now.Add(sibling.TokenTTL + sibling.MaxSkew + time.Second), false},
		{"from the future beyond its life", good, now.Add(-sibling.TokenTTL - sibling.MaxSkew - time.Second), false},
		{"tampered from", strings.Replace(good, "srv-1", "srv-2", 1), now, false},
		{"two spaces", strings.Replace(good, " ", "  ", 1), now, false},
		{"short mac", good[:len(good)-2], now, false},
		{"signed expiry", strings.Replace(good, " 18", " -18", 1), now, false},
		{"empty", "", now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sibling.Check(secret, tc.header, "GET", "/v1/sibling/chunks/x", tc.at)
			if (err == nil) != tc.ok {
				t.Errorf("Check: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, sibling.ErrToken) {
				t.Errorf("error %v does not wrap ErrToken", err)
			}
		})
	}
}

// countingSource is a share's WAN source that counts the chunks asked of it.
type countingSource struct {
	transfer.StoreSource
	chunks atomic.Int64
}

func (s *countingSource) GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error) {
	s.chunks.Add(1)
	return s.StoreSource.GetChunkFrame(ctx, id)
}

// TestShareTakesFromASiblingFirst: a share of a version a sibling holds takes its chunks from the
// sibling and none over the WAN, except one the sibling lacks; a share of a version no sibling
// holds asks the siblings once, not once per chunk.
func TestShareTakesFromASiblingFirst(t *testing.T) {
	ctx := context.Background()
	key, _ := signing.GenerateKey()
	var lost atomic.Pointer[manifest.ID] // the chunk the sibling lacks
	sib := newLender(t, secret, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if id := lost.Load(); id != nil && strings.HasSuffix(r.URL.Path, "/chunks/"+id.String()) {
				http.NotFound(w, r)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	img := signedImage(t, sib.st, key)
	ids := chunks(img.Version.Manifest)
	// The WAN source (a peer region) holds it too.
	wanStore, _ := storetest.PackDir(t)
	if _, err := transfer.Copy(ctx, transfer.StoreSource{S: sib.st}, wanStore, img.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	lost.Store(&ids[0])
	f := &sibling.Fetcher{Siblings: sibling.Static(sibling.Sibling{ID: "b", Endpoint: sib.srv.URL}), Secret: secret, CentralKey: key.Public()}
	own, _ := storetest.PackDir(t)
	wan := &countingSource{StoreSource: transfer.StoreSource{S: wanStore}}
	if _, err := transfer.Copy(ctx, f.First(wan, img.Version.ID), own, img.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if n := wan.chunks.Load(); n != 1 {
		t.Errorf("%d chunks came over the WAN; want 1, the one the sibling lacks", n)
	}
	if rep, err := own.Verify(ctx, 2, nil); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("the copy: %+v, %v", rep, err)
	}

	// A version no sibling holds: the WAN, and one question to the sibling.
	other := storetest.Import(t, wanStore, storetest.SampleDisk(t, 4<<20, 9), "other")
	if err := wanStore.PutSignature(ctx, other.Version.ID, key.SignVersion(other.Version.ID)); err != nil {
		t.Fatal(err)
	}
	before := sib.served.Load()
	wan2 := &countingSource{StoreSource: transfer.StoreSource{S: wanStore}}
	if _, err := transfer.Copy(ctx, f.First(wan2, other.Version.ID), own, other.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if asked := sib.served.Load() - before; asked != 1 {
		t.Errorf("the sibling was asked %d times for a version it does not hold; want once", asked)
	}
	if wan2.chunks.Load() == 0 {
		t.Error("nothing came over the WAN for a version no sibling holds")
	}
}
