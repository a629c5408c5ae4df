package state

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/manifest"
	"tms/store"
)

func openCat(t *testing.T) (*Catalog, string) {
	t.Helper()
	p := testDB(t, "central.db")
	c, err := OpenCatalog(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p
}

func vid(s string) manifest.ID { return manifest.BLAKE3.Sum([]byte(s)) }

func TestRegions(t *testing.T) { forEachBackend(t, testRegions) }

func testRegions(t *testing.T) {
	ctx := context.Background()
	c, _ := openCat(t)
	r := Region{ID: "lab-1", Labels: map[string]string{"site": "north"}, Capacity: 1 << 40, Endpoint: "http://10.0.0.2:8081", LastSeen: time.Unix(100, 5),
		Timezone: "Europe/Berlin"}
	if err := c.UpsertRegion(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Used = 5
	if err := c.UpsertRegion(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetRegion(ctx, "lab-1")
	if err != nil || got.Used != 5 || got.Labels["site"] != "north" || !got.LastSeen.Equal(r.LastSeen) || got.Timezone != "Europe/Berlin" {
		t.Fatalf("GetRegion = %+v, %v", got, err)
	}
	if _, err := c.GetRegion(ctx, "nope"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "region nope") {
		t.Fatalf("missing region: %v", err)
	}
	for _, bad := range []Region{{ID: "Lab 1"}, {ID: ""}, {ID: "ok", Endpoint: "ftp://x"}, {ID: "ok", Timezone: "Mars/Olympus"}, {ID: "ok", Timezone: "Local"}} {
		if err := c.UpsertRegion(ctx, bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	all, err := c.ListRegions(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("ListRegions = %v, %v", all, err)
	}
}

func TestVersionsTagsAndResolve(t *testing.T) { forEachBackend(t, testVersionsTagsAndResolve) }

func testVersionsTagsAndResolve(t *testing.T) {
	ctx := context.Background()
	c, _ := openCat(t)
	v1 := Version{ID: vid("1"), Name: "win11", Created: time.Now(), DiskSize: 1 << 30, ChunkSize: 1 << 18, StoredBytes: 700 << 20}
	v2 := Version{ID: vid("2"), Name: "win11", Parent: v1.ID, Created: time.Now(), DiskSize: 1 << 30, ChunkSize: 1 << 18}
	if err := c.RecordVersion(ctx, v1, "latest"); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordVersion(ctx, v2, "latest"); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordVersion(ctx, v1, "exam"); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]manifest.ID{"win11": v2.ID, "win11:exam": v1.ID, "win11@" + v1.ID.String()[:8]: v1.ID} {
		if got, err := c.Resolve(ctx, ref); err != nil || got != want {
			t.Errorf("Resolve(%s) = %s, %v", ref, got.Short(), err)
		}
	}
	if n, err := c.StoredBytes(ctx, v1.ID); err != nil || n != 700<<20 {
		t.Errorf("StoredBytes(v1) = %d, %v", n, err)
	}
	if _, err := c.StoredBytes(ctx, vid("9")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StoredBytes of no version: %v", err)
	}
	if _, err := c.Resolve(ctx, "win11:nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown tag: %v", err)
	}
	if _, err := c.Resolve(ctx, "other@"+v1.ID.String()[:8]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("version of another image: %v", err)
	}
	if _, err := c.Resolve(ctx, "../x"); err == nil {
		t.Error("bad reference accepted")
	}
	if err := c.RecordVersion(ctx, Version{ID: vid("3"), Name: "a/b"}, ""); err == nil {
		t.Error("bad name accepted")
	}
}

func TestLocations(t *testing.T) { forEachBackend(t, testLocations) }

func testLocations(t *testing.T) {
	ctx := context.Background()
	c, _ := openCat(t)
	v := Version{ID: vid("1"), Name: "lab", Created: time.Now(), DiskSize: 1, ChunkSize: 1 << 18}
	c.RecordVersion(ctx, v, "latest")
	for _, id := range []string{"b", "a", "c"} {
		c.UpsertRegion(ctx, Region{ID: id})
	}
	c.SetLocation(ctx, v.ID, "b", Verified)
	c.SetLocation(ctx, v.ID, "c", Verified)
	c.SetLocation(ctx, v.ID, "a", Pending)
	locs, err := c.Locations(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range locs {
		got = append(got, l.Region.ID+"="+l.State)
	}
	if strings.Join(got, ",") != "b=verified,c=verified,a=pending" {
		t.Fatalf("Locations = %v", got)
	}
	if err := c.SetLocation(ctx, v.ID, "nowhere", Verified); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("location in an unknown region: %v", err)
	}
	if err := c.SetLocation(ctx, vid("unknown"), "a", Verified); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("location of an unknown version: %v", err)
	}
	if err := c.SetLocation(ctx, v.ID, "a", "maybe"); err == nil {
		t.Fatal("bad state accepted")
	}
	c.RemoveLocation(ctx, v.ID, "b")
	if locs, _ := c.Locations(ctx, v.ID); len(locs) != 2 {
		t.Fatalf("after remove: %v", locs)
	}
}

func TestReopenKeepsStateAndRefusesNewerSchemas(t *testing.T) {
	forEachBackend(t, testReopenKeepsStateAndRefusesNewerSchemas)
}

func testReopenKeepsStateAndRefusesNewerSchemas(t *testing.T) {
	ctx := context.Background()
	c, p := openCat(t)
	c.UpsertRegion(ctx, Region{ID: "lab-1"})
	c.Close()
	c, err := OpenCatalog(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRegion(ctx, "lab-1"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	c.Close()
	rawExec(t, p, `INSERT INTO schema_migrations (version, applied) VALUES (99, 0)`)
	if _, err := OpenCatalog(ctx, p); err == nil || !strings.Contains(err.Error(), "newer than this tms knows") {
		t.Fatalf("opening a newer schema: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) { forEachBackend(t, testConcurrentWriters) }

func testConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	c, _ := openCat(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if err := c.UpsertRegion(ctx, Region{ID: "r" + string(rune('a'+i)), Used: int64(j)}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestVersionSignatures checks that central's signature of a version is kept with it, and that
// recording the version again without one (a re-registration by an older worker) keeps it.
func TestVersionSignatures(t *testing.T) { forEachBackend(t, testVersionSignatures) }

func testVersionSignatures(t *testing.T) {
	ctx := context.Background()
	c, _ := openCat(t)
	sig := []byte(strings.Repeat("s", 64))
	v := Version{ID: vid("signed"), Name: "lab", Created: time.Unix(1, 0), KeyID: "0011223344556677", Signature: sig}
	if err := c.RecordVersion(ctx, v, "latest"); err != nil {
		t.Fatal(err)
	}
	v.KeyID, v.Signature = "", nil
	if err := c.RecordVersion(ctx, v, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordVersion(ctx, Version{ID: vid("unsigned"), Name: "lab", Created: time.Unix(2, 0)}, ""); err != nil {
		t.Fatal(err)
	}
	vs, err := c.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[manifest.ID]Version{}
	for _, e := range vs {
		got[e.ID] = e.Version
	}
	if s := got[vid("signed")]; s.KeyID != "0011223344556677" || string(s.Signature) != string(sig) {
		t.Errorf("signed version reads back as key %q signature %x", s.KeyID, s.Signature)
	}
	if u := got[vid("unsigned")]; u.KeyID != "" || len(u.Signature) != 0 {
		t.Errorf("unsigned version reads back signed: %q %x", u.KeyID, u.Signature)
	}
}
