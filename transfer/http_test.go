package transfer_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"tms/internal/storetest"

	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/signing"
	"tms/store"
	"tms/transfer"
)

// centralKey is the test's central: the only holder of the private key that mints grants.
var centralKey = func() *signing.PrivateKey {
	k, err := signing.GenerateKey()
	if err != nil {
		panic(err)
	}
	return k
}()

// servingRegion is the region whose store peer serves.
const servingRegion = "region-a"

// peer serves store src over HTTP behind optional fault injection.
func peer(t *testing.T, src *store.Store, fault func(http.ResponseWriter, *http.Request, http.Handler)) *url.URL {
	t.Helper()
	mux := http.NewServeMux()
	(&transfer.Handler{Store: src, Region: servingRegion, CentralKey: centralKey.Public()}).Routes(mux)
	var h http.Handler = mux
	if fault != nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fault(w, r, mux) })
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// peerWithMeter serves store src over HTTP, counting the bytes it serves with m.
func peerWithMeter(t *testing.T, src *store.Store, m transfer.Meter) *url.URL {
	t.Helper()
	mux := http.NewServeMux()
	(&transfer.Handler{Store: src, Region: servingRegion, CentralKey: centralKey.Public(), Meter: m}).Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func grantFor(t *testing.T, v manifest.ID) string {
	return centralKey.MintGrant(signing.Grant{Version: v, Audience: "region-b", Server: servingRegion, Expires: time.Now().Add(time.Minute)})
}

func TestPeerPullOverHTTP(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	disk := storetest.SampleDisk(t, 16*mib, 6)
	v := storetest.Import(t, a, disk, "lab")
	src := &transfer.HTTPSource{Base: peer(t, a, nil), Version: v.Version.ID, Grant: grantFor(t, v.Version.ID)}
	res, err := transfer.Copy(ctx, src, b, v.Version.ID, transfer.Options{Tag: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedBytes != v.Stats.StoredBytes || exportSum(t, b, res.Version) != storetest.FileSum(t, disk) {
		t.Fatalf("peer pull moved %d of %d bytes or exported a different disk", res.MovedBytes, v.Stats.StoredBytes)
	}
}

// TestPeerPullCarriesSignature checks that a version pulled from a peer arrives with central's
// signature, written before the manifest is published.
func TestPeerPullCarriesSignature(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 16), "lab")
	if err := a.PutSignature(ctx, v.Version.ID, centralKey.SignVersion(v.Version.ID)); err != nil {
		t.Fatal(err)
	}
	var signedFirst bool
	base := peer(t, a, func(w http.ResponseWriter, r *http.Request, h http.Handler) {
		if strings.HasSuffix(r.URL.Path, "/signature") {
			_, err := b.GetManifest(ctx, v.Version.ID)
			signedFirst = errors.Is(err, store.ErrNotFound)
		}
		h.ServeHTTP(w, r)
	})
	src := &transfer.HTTPSource{Base: base, Version: v.Version.ID, Grant: grantFor(t, v.Version.ID)}
	if _, err := transfer.Copy(ctx, src, b, v.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	sig, err := b.GetSignature(ctx, v.Version.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.GetManifest(ctx, v.Version.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := centralKey.Public().VerifyManifest(v.Version.ID, got.Encoded, sig); err != nil {
		t.Fatal(err)
	}
	if !signedFirst {
		t.Error("the signature was fetched after the manifest was published")
	}
}

func TestHandlerRefusesWhatTheGrantDoesNotOpen(t *testing.T) {
	a, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 7), "lab")
	other := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 8), "other")
	base := peer(t, a, nil)
	var otherChunk manifest.ID
	for _, c := range other.Version.Manifest.Chunks[4:] {
		if !c.IsZero() {
			otherChunk = c
			break
		}
	}
	vid := v.Version.ID.String()
	expired := centralKey.MintGrant(signing.Grant{Version: v.Version.ID, Server: servingRegion, Expires: time.Now().Add(-time.Second)})
	forRegionB := centralKey.MintGrant(signing.Grant{Version: v.Version.ID, Audience: "region-c", Server: "region-b", Expires: time.Now().Add(time.Minute)})
	rogue, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	minted := rogue.MintGrant(signing.Grant{Version: v.Version.ID, Audience: "region-b", Server: servingRegion, Expires: time.Now().Add(time.Minute)})
	for name, c := range map[string]struct {
		path, token string
		want        int
	}{
		"no grant":                            {"/v1/versions/" + vid + "/manifest", "", http.StatusUnauthorized},
		"expired grant":                       {"/v1/versions/" + vid + "/manifest", expired, http.StatusUnauthorized},
		"grant for serving at another region": {"/v1/versions/" + vid + "/manifest", forRegionB, http.StatusUnauthorized},
		"grant not minted by central":         {"/v1/versions/" + vid + "/manifest", minted, http.StatusUnauthorized},
		"unsigned version's signature":        {"/v1/versions/" + vid + "/signature", grantFor(t, v.Version.ID), http.StatusNotFound},
		"grant for another":                   {"/v1/versions/" + other.Version.ID.String() + "/manifest", grantFor(t, v.Version.ID), http.StatusForbidden},
		"chunk of another":                    {"/v1/versions/" + vid + "/chunks/" + otherChunk.String(), grantFor(t, v.Version.ID), http.StatusForbidden},
		"bad version id":                      {"/v1/versions/xyz/manifest", grantFor(t, v.Version.ID), http.StatusBadRequest},
		"bad chunk id":                        {"/v1/versions/" + vid + "/chunks/..%2f..%2fetc", grantFor(t, v.Version.ID), http.StatusBadRequest},
		"granted manifest":                    {"/v1/versions/" + vid + "/manifest", grantFor(t, v.Version.ID), http.StatusOK},
		"unknown route":                       {"/v1/chunks/" + otherChunk.String(), grantFor(t, v.Version.ID), http.StatusNotFound},
	} {
		req, _ := http.NewRequest("GET", base.String()+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s, want %d", name, resp.Status, c.want)
		}
	}
}

func TestPeerFaults(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 9), "lab")
	for name, c := range map[string]struct {
		fault func(http.ResponseWriter, *http.Request, http.Handler)
		want  error
	}{
		"flipped byte in a chunk": {func(w http.ResponseWriter, r *http.Request, h http.Handler) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if strings.Contains(r.URL.Path, "/chunks/") && len(b) > 100 {
				b[len(b)/2] ^= 1
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
		}, transfer.ErrSourceCorrupt},
		"body cut short": {func(w http.ResponseWriter, r *http.Request, h http.Handler) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if strings.Contains(r.URL.Path, "/chunks/") {
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				w.Write(b[:len(b)/2])
				return
			}
			w.Write(b)
		}, store.ErrUnavailable},
		"peer refuses": {func(w http.ResponseWriter, r *http.Request, h http.Handler) {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}, store.ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			b, _ := storetest.Dir(t)
			src := &transfer.HTTPSource{Base: peer(t, a, c.fault), Version: v.Version.ID, Grant: grantFor(t, v.Version.ID)}
			_, err := transfer.Copy(ctx, src, b, v.Version.ID, transfer.Options{})
			if !errors.Is(err, c.want) {
				t.Fatalf("copy: %v, want %v", err, c.want)
			}
			if _, err := b.GetManifest(ctx, v.Version.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatal("published after a faulty transfer")
			}
			if rep, err := b.Verify(ctx, 4, nil); err != nil || len(rep.Problems) != 0 {
				t.Fatalf("destination holds unverified data: %v %v", rep.Problems, err)
			}
		})
	}
}

// FuzzHandler sends arbitrary paths and tokens to a store holding a real version: the
// handler never panics, and answers 200 only to a valid grant for the version in the path.
func FuzzHandler(f *testing.F) {
	dir := f.TempDir()
	be, err := store.NewDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	s := store.New(be, store.Options{})
	s.Init(context.Background())
	disk := dir + "/disk.raw"
	if err := sampledisk.Write(disk, sampledisk.Options{Size: 4 << 20, Seed: 1}); err != nil {
		f.Fatal(err)
	}
	res, err := imageio.Import(context.Background(), s, disk, imageio.ImportOptions{Name: "lab"})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	(&transfer.Handler{Store: s, Region: servingRegion, CentralKey: centralKey.Public()}).Routes(mux)
	vid := res.Version.ID.String()
	var chunk string
	for _, c := range res.Version.Manifest.Chunks {
		if !c.IsZero() {
			chunk = c.String()
			break
		}
	}
	valid := "Bearer " + centralKey.MintGrant(signing.Grant{Version: res.Version.ID, Server: servingRegion, Expires: time.Now().Add(24 * time.Hour)})
	f.Add("/v1/versions/"+vid+"/manifest", valid)
	f.Add("/v1/versions/"+vid+"/chunks/"+chunk, valid)
	f.Add("/v1/versions/"+vid+"/chunks/"+chunk, "Bearer tmsg1.e30.AAAA")
	f.Add("/v1/versions/../../etc/passwd", valid)
	f.Fuzz(func(t *testing.T, path, auth string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?") {
			return
		}
		req, err := http.NewRequest("GET", "http://peer"+path, nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			return
		}
		tok, _ := strings.CutPrefix(auth, "Bearer ")
		g, err := centralKey.Public().VerifyGrant(tok, servingRegion, time.Now())
		if err != nil || !strings.HasPrefix(req.URL.Path, "/v1/versions/"+g.Version.String()+"/") {
			t.Fatalf("200 for %q with %q", path, auth)
		}
	})
}

// TestDeployFromPeer writes a version to a disk file straight from a peer's chunk endpoint, as
// a terminal's agent deploys from its region, with read-back verification.
func TestDeployFromPeer(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	disk := storetest.SampleDisk(t, 16*mib, 10)
	v := storetest.Import(t, a, disk, "lab")
	src := &transfer.HTTPSource{Base: peer(t, a, nil), Version: v.Version.ID, Grant: grantFor(t, v.Version.ID)}
	mb, err := src.GetManifestBytes(ctx, v.Version.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Decode(mb)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir() + "/terminal-disk.raw"
	res, err := imageio.Export(ctx, transfer.NewGetter(src), &store.Version{ID: v.Version.ID, Manifest: m, Encoded: mb}, out, imageio.ExportOptions{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if storetest.FileSum(t, out) != storetest.FileSum(t, disk) || res.Written == 0 {
		t.Fatal("deployed disk differs from the source")
	}
	// A second deploy over the same disk fetches nothing.
	res, err = imageio.Export(ctx, transfer.NewGetter(src), &store.Version{ID: v.Version.ID, Manifest: m, Encoded: mb}, out, imageio.ExportOptions{Verify: true})
	if err != nil || res.Written != 0 {
		t.Fatalf("redeploy wrote %d chunks, %v", res.Written, err)
	}
}

// A peer pulling a version holds it in the source store for a little while after its last
// request: an admin's 'image rm' there is refused and names the pull.
func TestPullHoldsTheSourceVersion(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 11), "lab")
	grant := centralKey.MintGrant(signing.Grant{Version: v.Version.ID, Audience: "region-b", Server: servingRegion, Expires: time.Now().Add(time.Hour)})
	src := &transfer.HTTPSource{Base: peer(t, a, nil), Version: v.Version.ID, Grant: grant}
	start := time.Now()
	if _, err := transfer.Copy(ctx, src, b, v.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	holds, err := a.Holds(ctx, v.Version.ID)
	want := "pull/region-b/" + v.Version.ID.Short()
	if err != nil || len(holds) != 1 || holds[0].Holder != want ||
		holds[0].Until.Before(start.Add(transfer.PullHoldTTL/2)) || holds[0].Until.After(time.Now().Add(transfer.PullHoldTTL+time.Second)) {
		t.Fatalf("holds in the source after a pull = %+v, %v; want %s about %s ahead", holds, err, want, transfer.PullHoldTTL)
	}
	ref, _ := manifest.ParseRef("lab@" + v.Version.ID.String())
	var he *store.HeldError
	if _, err := a.Remove(ctx, ref); !errors.As(err, &he) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Remove of a version being pulled = %v; want a *HeldError naming %s", err, want)
	}
	// A grant that expires sooner ends the hold with it.
	short := grantFor(t, v.Version.ID) // a minute
	g, _ := centralKey.Public().VerifyGrant(short, servingRegion, time.Now())
	c, _ := storetest.Dir(t)
	if _, err := transfer.Copy(ctx, &transfer.HTTPSource{Base: peer(t, a, nil), Version: v.Version.ID, Grant: short}, c, v.Version.ID, transfer.Options{}); err != nil {
		t.Fatal(err)
	}
	if holds, err := a.Holds(ctx, v.Version.ID); err != nil || len(holds) != 1 || holds[0].Until.After(g.Expires) {
		t.Fatalf("holds after a pull with a one-minute grant = %+v, %v; want none past %s", holds, err, g.Expires)
	}
	// The destination's copy is published and nobody holds it: the pull's lock covered it until then.
	if hs, err := b.Holds(ctx, v.Version.ID); err != nil || len(hs) != 0 {
		t.Fatalf("holds in the destination = %+v, %v", hs, err)
	}
}

// A peer serves a version's stats to a puller with a grant for it, so the puller can check its
// room before it moves a chunk; a peer that keeps none, or sends garbage, says so.
func TestPeerServesStats(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	v := storetest.Import(t, a, storetest.SampleDisk(t, 8*mib, 17), "lab")
	src := &transfer.HTTPSource{Base: peer(t, a, nil), Version: v.Version.ID, Grant: grantFor(t, v.Version.ID)}
	st, err := src.GetStats(ctx, v.Version.ID)
	if err != nil || st.StoredBytes != v.Stats.StoredBytes || st.StoredBytes == 0 {
		t.Fatalf("GetStats = %+v, %v; want %+v", st, err, v.Stats)
	}
	other := storetest.Publish(t, a, "bare", "", "x") // published without stats
	bare := &transfer.HTTPSource{Base: src.Base, Version: other.ID, Grant: grantFor(t, other.ID)}
	if _, err := bare.GetStats(ctx, other.ID); !errors.Is(err, store.ErrNotFound) && err != nil {
		t.Fatalf("GetStats of a version without stats = %v", err)
	}
	// A grant for one version opens no other version's stats.
	if _, err := (&transfer.HTTPSource{Base: src.Base, Version: other.ID, Grant: src.Grant}).GetStats(ctx, other.ID); err == nil {
		t.Fatal("a grant for another version opened the stats")
	}
	garbage := peer(t, a, func(w http.ResponseWriter, r *http.Request, h http.Handler) {
		w.Write([]byte(`{"stored_bytes": -5}`))
	})
	if _, err := (&transfer.HTTPSource{Base: garbage, Version: v.Version.ID, Grant: src.Grant}).GetStats(ctx, v.Version.ID); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("GetStats of garbage = %v, want ErrCorrupt", err)
	}
}
