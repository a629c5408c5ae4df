package store_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
)

// publishRandom stores a version of name made of n incompressible 64 KiB chunks drawn from
// seed (chunks of the same seed and index are the same chunk), tagged name:tag, and dates its
// manifest stored at.
func publishRandom(t *testing.T, s *store.Store, dir, name, tag string, stored time.Time, chunks ...uint64) *store.Version {
	t.Helper()
	data := make([][]byte, len(chunks))
	for i, seed := range chunks {
		data[i] = make([]byte, manifest.MinChunkSize)
		r := rand.New(rand.NewPCG(seed, 7))
		for j := range data[i] {
			data[i][j] = byte(r.Uint32())
		}
	}
	v := storetest.PublishChunks(t, s, manifest.Meta{Name: name, Created: stored, Source: "test"}, tag, data...)
	if err := os.Chtimes(filepath.Join(dir, "manifests", v.ID.String()), stored, stored); err != nil {
		t.Fatal(err)
	}
	return v
}

func seeds(from, n uint64) []uint64 {
	var out []uint64
	for i := range n {
		out = append(out, from+i)
	}
	return out
}

// fourVersions publishes four versions of 8 distinct chunks each, stored in the order a, b, c,
// d (their ids sort otherwise), and returns them with the store's bytes.
func fourVersions(t *testing.T) (*store.Store, map[string]*store.Version, int64) {
	s, dir := storetest.Dir(t)
	base := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	vs := map[string]*store.Version{}
	for i, name := range []string{"a", "b", "c", "d"} {
		vs[name] = publishRandom(t, s, dir, name, "v1", base.Add(time.Duration(i)*24*time.Hour), seeds(uint64(i*100), 8)...)
	}
	u, err := s.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, vs, u.Used
}

func present(t *testing.T, s *store.Store, v *store.Version) bool {
	t.Helper()
	_, err := s.GetManifest(context.Background(), v.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func evictedNames(r store.EvictResult) string {
	var names []string
	for _, e := range r.Evicted {
		names = append(names, e.Name)
	}
	return strings.Join(names, ",")
}

func TestEvictRemovesOldestStoredFirstDownToLowWater(t *testing.T) {
	s, vs, used := fourVersions(t)
	ctx := context.Background()
	// 95% full against a high-water mark of 90%; down to 55% takes two of the four versions.
	capacity := used * 100 / 95
	res, err := s.Evict(ctx, store.EvictOptions{Capacity: capacity, HighWater: 0.9, LowWater: 0.55, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(res); got != "a,b" {
		t.Fatalf("evicted %q, want the two oldest stored, a,b", got)
	}
	for name, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true} {
		if present(t, s, vs[name]) != want {
			t.Errorf("version %s present = %v, want %v", name, !want, want)
		}
	}
	if res.GC == nil || res.GC.FreedChunks != 16 {
		t.Errorf("GC after eviction = %+v, want 16 chunks freed", res.GC)
	}
	if res.Used > int64(0.55*float64(capacity)) {
		t.Errorf("used after eviction %d, above the low-water mark %d", res.Used, int64(0.55*float64(capacity)))
	}
}

func TestEvictDoesNothingBelowHighWater(t *testing.T) {
	s, _, used := fourVersions(t)
	res, err := s.Evict(context.Background(), store.EvictOptions{Capacity: used * 2, HighWater: 0.9, LowWater: 0.1})
	if err != nil || res.Ran || len(res.Evicted) > 0 {
		t.Fatalf("Evict at 50%% = %+v, %v; want nothing done", res, err)
	}
}

func TestEvictNeverRemovesPinnedHeldOrReserved(t *testing.T) {
	s, vs, used := fourVersions(t)
	ctx := context.Background()
	if err := s.Pin(ctx, vs["a"].ID, "ana"); err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(ctx, vs["b"].ID, "deploy/region-b/lab/b", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, vs["c"].ID, "plan/exam-week", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Room for a whole store's worth more: impossible.
	res, err := s.Evict(ctx, store.EvictOptions{Capacity: used * 100 / 95, HighWater: 0.9, LowWater: 0.5, Incoming: used / 2, For: "exam@1234"})
	var nr *store.NoRoomError
	if !errors.As(err, &nr) || !errors.Is(err, store.ErrFull) {
		t.Fatalf("Evict = %v, want a NoRoomError", err)
	}
	if got := evictedNames(res); got != "d" {
		t.Fatalf("evicted %q, want only d", got)
	}
	for _, name := range []string{"a", "b", "c"} {
		if !present(t, s, vs[name]) {
			t.Errorf("version %s was removed", name)
		}
	}
	msg := err.Error()
	for _, want := range []string{"for exam@1234", "a (pinned, ", "b (in use by deploy/region-b/lab/b, ", "c (in use by plan/exam-week, "} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
}

// A hold taken after eviction chose a version and before it removed it wins: the version stays
// and eviction takes the next one.
func TestEvictHoldTakenMeanwhileWins(t *testing.T) {
	s, vs, used := fourVersions(t)
	ctx := context.Background()
	o := store.WithBeforeRemove(store.EvictOptions{Capacity: used * 100 / 95, HighWater: 0.9, LowWater: 0.55}, func(v store.VersionInfo) {
		if v.ID == vs["a"].ID {
			if err := s.Hold(ctx, v.ID, "deploy/region-b/lab/a", time.Now().Add(time.Hour)); err != nil {
				t.Error(err)
			}
		}
	})
	res, err := s.Evict(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(res); got != "b,c" {
		t.Fatalf("evicted %q, want b,c (a was taken by a deploy meanwhile)", got)
	}
	if !present(t, s, vs["a"]) {
		t.Fatal("the version a deploy took meanwhile was removed")
	}
}

func TestEvictKeepsTheVersionItMakesRoomFor(t *testing.T) {
	s, vs, used := fourVersions(t)
	res, err := s.Evict(context.Background(), store.EvictOptions{Capacity: used * 100 / 95, HighWater: 0.9, LowWater: 0.55, Keep: []manifest.ID{vs["a"].ID}})
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(res); got != "b,c" {
		t.Fatalf("evicted %q, want b,c", got)
	}
}

func TestNoRoomMessage(t *testing.T) {
	gib := int64(1) << 30
	e := &store.NoRoomError{Store: "/srv/store", For: "exam@3f2a1b2c", Need: gib * 12 / 10, Free: gib * 3 / 10, Held: []store.VersionInfo{
		{Name: "win11", OwnBytes: gib * 21 / 10, Holds: []store.Hold{{Holder: store.PinHolder, Pinned: true}}},
		{Name: "lab", OwnBytes: gib * 19 / 10, Holds: []store.Hold{{Holder: "deploy/region-b/lab/lab"}}},
	}}
	want := "region-b needs 1.2 GiB for exam@3f2a1b2c, has 0.3 GiB free under its high-water mark; held: win11 (pinned, 2.1 GiB), lab (in use by deploy/region-b/lab/lab, 1.9 GiB)"
	if got := e.Message("region-b"); got != want {
		t.Errorf("Message =\n%s\nwant\n%s", got, want)
	}
	if got := e.Error(); !strings.HasPrefix(got, "/srv/store needs 1.2 GiB") {
		t.Errorf("Error = %s", got)
	}
}

func TestVersionsCountSharedAndOwnBytes(t *testing.T) {
	s, dir := storetest.Dir(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	v1 := publishRandom(t, s, dir, "lab", "old", now, 1, 2, 3)
	v2 := publishRandom(t, s, dir, "lab", "new", now.Add(time.Hour), 3, 4)
	if err := s.Pin(ctx, v2.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].ID != v1.ID || vs[1].ID != v2.ID {
		t.Fatalf("Versions = %+v, want v1 then v2", vs)
	}
	one := vs[0].StoredBytes / 3 // incompressible chunks: all frames the same size
	if one < manifest.MinChunkSize || vs[0].OwnBytes != 2*one || vs[1].StoredBytes != 2*one || vs[1].OwnBytes != one {
		t.Errorf("bytes: v1 stored %d own %d, v2 stored %d own %d; want 3, 2, 2, 1 chunks of %d", vs[0].StoredBytes, vs[0].OwnBytes, vs[1].StoredBytes, vs[1].OwnBytes, one)
	}
	if !vs[0].Stored.Equal(now) || vs[0].Pinned() || !vs[1].Pinned() || vs[1].Holds[0].By != "ana" {
		t.Errorf("Versions = %+v", vs)
	}
	if strings.Join(vs[0].Tags, ",") != "old" {
		t.Errorf("tags of v1 = %v", vs[0].Tags)
	}
}

func TestPinStopsRemoveUntilUnpinned(t *testing.T) {
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	v := storetest.Publish(t, s, "win11", "v1", "x")
	if err := s.Pin(ctx, v.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	ref, _ := manifest.ParseRef("win11:v1")
	_, err := s.Remove(ctx, ref)
	var he *store.HeldError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "in use by pin (by ana") {
		t.Fatalf("Remove of a pinned version = %v, want a HeldError naming the pin", err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetChunk(ctx, v.Manifest.Hash, v.Manifest.Chunks[0], nil); err != nil {
		t.Fatalf("GC freed a pinned version's chunk: %v", err)
	}
	if was, err := s.Unpin(ctx, v.ID); err != nil || !was {
		t.Fatalf("Unpin = %v, %v", was, err)
	}
	if was, err := s.Unpin(ctx, v.ID); err != nil || was {
		t.Fatalf("second Unpin = %v, %v; want false", was, err)
	}
	if _, err := s.Remove(ctx, ref); err != nil {
		t.Fatalf("Remove after Unpin = %v", err)
	}
}

func TestPinOfAbsentVersionIsNotFound(t *testing.T) {
	s, _ := storetest.Dir(t)
	err := s.Pin(context.Background(), manifest.BLAKE3.Sum([]byte("nothing")), "ana")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Pin = %v, want ErrNotFound", err)
	}
	if ps, _ := s.Pins(context.Background()); len(ps) != 0 {
		t.Fatalf("a failed pin stayed: %+v", ps)
	}
}

// A reservation of a version not yet in the store stands (GC does not stop for it), and once
// the version arrives Remove refuses it.
func TestReserveBeforeTheVersionArrives(t *testing.T) {
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	storetest.Publish(t, s, "old", "v1", "o")
	// The version to come: built in another store, so its id is known before it arrives here.
	src, _ := storetest.Dir(t)
	v := storetest.Publish(t, src, "exam", "v1", "e")
	if err := s.Reserve(ctx, v.ID, "plan/exam-week", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("Reserve of a version still to come = %v", err)
	}
	ref, _ := manifest.ParseRef("old:v1")
	if _, err := s.Remove(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatalf("GC with a reservation of a version still to come = %v", err)
	}
	v2 := storetest.Publish(t, s, "exam", "v1", "e")
	if v2.ID != v.ID {
		t.Fatal("the same version published twice has two ids")
	}
	exam, _ := manifest.ParseRef("exam:v1")
	var he *store.HeldError
	if _, err := s.Remove(ctx, exam); !errors.As(err, &he) || !strings.Contains(err.Error(), "plan/exam-week") {
		t.Fatalf("Remove of a reserved version = %v, want a HeldError naming the plan", err)
	}
}

func TestGCDropsPinsOfVersionsGoneByHand(t *testing.T) {
	s, dir := storetest.Dir(t)
	ctx := context.Background()
	v := storetest.Publish(t, s, "lab", "v1", "x")
	if err := s.Pin(ctx, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "manifests", v.ID.String())); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatalf("GC with the pin of a version gone = %v", err)
	}
	if res.OrphanPins != 1 {
		t.Errorf("OrphanPins = %d, want 1", res.OrphanPins)
	}
}

// Eviction while an import holds the store removes what it must, decides on what gc will free,
// and leaves the chunks to the next gc.
func TestEvictWhileAnImportRunsDecidesOnTheEstimate(t *testing.T) {
	s, vs, used := fourVersions(t)
	ctx := context.Background()
	lock, err := s.LockShared(ctx, "an import", nil)
	if err != nil {
		t.Fatal(err)
	}
	capacity := used * 100 / 95
	res, err := s.Evict(ctx, store.EvictOptions{Capacity: capacity, HighWater: 0.9, LowWater: 0.55})
	if err != nil {
		t.Fatal(err)
	}
	if got := evictedNames(res); got != "a,b" || !res.GCPending || res.GC != nil || res.Used > int64(0.55*float64(capacity)) {
		t.Fatalf("Evict under an import = %+v, want a,b evicted, gc pending, an estimate under low water", res)
	}
	lock.Release(ctx)
	// The next eviction, with the rest pinned, finds the garbage and collects it.
	for _, name := range []string{"c", "d"} {
		if err := s.Pin(ctx, vs[name].ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	res, err = s.Evict(ctx, store.EvictOptions{Capacity: capacity, HighWater: 0.2, LowWater: 0.1})
	var nr *store.NoRoomError
	if !errors.As(err, &nr) {
		t.Fatalf("second Evict = %v", err)
	}
	if res.GC == nil || res.GC.FreedChunks != 16 || len(res.Evicted) != 0 || !present(t, s, vs["c"]) {
		t.Fatalf("second Evict = %+v; want the 16 chunks of a and b freed", res)
	}
}

// A pin and a removal of the same version that overlap: never both succeed, as with holds.
func TestPinRaceWithRemove(t *testing.T) {
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	for i := range 20 {
		v := storetest.Publish(t, s, "race", "t", "pin race "+string(rune('a'+i)))
		r, _ := manifest.ParseRef("race@" + v.ID.String())
		var pinErr, rmErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			pinErr = s.Pin(ctx, v.ID, "ana")
		}()
		_, rmErr = s.Remove(ctx, r)
		<-done
		_, gone := s.GetManifest(ctx, v.ID)
		if pinErr == nil && errors.Is(gone, store.ErrNotFound) {
			t.Fatalf("round %d: Pin succeeded and Remove (%v) deleted the version", i, rmErr)
		}
		if pinErr != nil && !errors.Is(pinErr, store.ErrNotFound) {
			t.Fatalf("round %d: Pin = %v", i, pinErr)
		}
		var he *store.HeldError
		if rmErr != nil && !errors.As(rmErr, &he) {
			t.Fatalf("round %d: Remove = %v", i, rmErr)
		}
		if _, err := s.Unpin(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
	}
}
