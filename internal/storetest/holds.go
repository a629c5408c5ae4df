package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"tms/manifest"
	"tms/store"
)

// Publish stores a small version of name with the given chunk contents (one chunk each, 64 KiB
// chunks), tags it name:tag unless tag is empty, and returns it.
func Publish(t testing.TB, s *store.Store, name, tag string, chunks ...string) *store.Version {
	t.Helper()
	data := make([][]byte, len(chunks))
	for i, c := range chunks {
		data[i] = make([]byte, manifest.MinChunkSize)
		copy(data[i], c)
	}
	return PublishChunks(t, s, manifest.Meta{Name: name, Created: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), Source: "test " + tag}, tag, data...)
}

// PublishChunks stores a version described by meta whose chunks are chunks (each at most 64 KiB,
// the version's chunk size), tags it meta.Name:tag unless tag is empty, and returns it.
func PublishChunks(t testing.TB, s *store.Store, meta manifest.Meta, tag string, chunks ...[]byte) *store.Version {
	t.Helper()
	ctx := context.Background()
	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, ChunkSize: manifest.MinChunkSize,
		DiskSize: int64(len(chunks)) * manifest.MinChunkSize,
		Meta:     meta}
	w := s.NewChunkWriter()
	for _, data := range chunks {
		id := m.Hash.Sum(data)
		if _, err := w.Put(ctx, id, data, nil); err != nil {
			t.Fatal(err)
		}
		m.Chunks = append(m.Chunks, id)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	enc, err := manifest.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.PutVersion(ctx, enc, store.Stats{})
	if err != nil {
		t.Fatal(err)
	}
	if tag != "" {
		if err := s.SetTag(ctx, meta.Name, tag, v.ID); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// Holds checks, on s (an initialised, empty store), that a held version survives Remove and
// GC, that an expired hold does not block, and that Release unblocks. Run by the tests of each
// backend.
func Holds(t *testing.T, s *store.Store) {
	ctx := context.Background()
	v1 := Publish(t, s, "lab", "v1", "shared", "only in v1")
	v2 := Publish(t, s, "lab", "v2", "shared", "only in v2")
	readable := func(v *store.Version) error {
		for _, c := range v.Manifest.Chunks {
			if _, err := s.GetChunk(ctx, v.Manifest.Hash, c, nil); err != nil {
				return err
			}
		}
		return nil
	}

	deploy := "deploy/region-b/lab/classroom/pc-07/0193a1"
	until := time.Now().Add(10 * time.Minute)
	if err := s.Hold(ctx, v1.ID, deploy, until); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	holds, err := s.Holds(ctx, v1.ID)
	if err != nil || len(holds) != 1 || holds[0].Holder != deploy || holds[0].Until.Before(until.Add(-time.Second)) {
		t.Fatalf("Holds = %+v, %v; want the deploy's hold until %s", holds, err, until)
	}

	for _, ref := range []string{"lab:v1", "lab@" + v1.ID.Short(), "lab"} {
		r, _ := manifest.ParseRef(ref)
		rm, err := s.Remove(ctx, r)
		var he *store.HeldError
		if !errors.As(err, &he) || !errors.Is(err, store.ErrBusy) {
			t.Fatalf("Remove(%s) of a held version = %+v, %v; want a *HeldError", ref, rm, err)
		}
		msg := err.Error()
		for _, want := range []string{"version " + v1.ID.Short() + " is in use by " + deploy + " until ", "wait for it to finish or cancel it"} {
			if !strings.Contains(msg, want) {
				t.Errorf("Remove(%s) error %q does not say %q", ref, msg, want)
			}
		}
		if len(he.Holds) != 1 || he.Holds[0].Holder != deploy || he.Holds[0].Version != v1.ID {
			t.Errorf("HeldError.Holds = %+v", he.Holds)
		}
		if len(rm.Tags) != 0 || len(rm.Versions) != 0 {
			t.Errorf("Remove(%s) reports removing %+v although it failed", ref, rm)
		}
	}
	if id, err := s.GetTag(ctx, "lab", "v1"); err != nil || id != v1.ID {
		t.Fatalf("tag lab:v1 after refused removals = %v, %v", id, err)
	}
	if _, err := s.GetTag(ctx, "lab", "v2"); err != nil {
		t.Fatalf("tag lab:v2 after a refused removal of lab: %v", err)
	}

	// Held and untagged: still kept by gc.
	if err := s.DeleteTag(ctx, "lab", "v1"); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if res.Held != 1 || res.FreedChunks != 0 {
		t.Errorf("GC = %+v; want 1 hold counted and nothing freed", res)
	}
	if err := readable(v1); err != nil {
		t.Fatalf("chunk of a held version after gc: %v", err)
	}

	// An expired hold does not block; a renewal moves the expiry.
	shareHolder := "share/region-c/" + v2.ID.Short()
	if err := s.Hold(ctx, v2.ID, shareHolder, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(ctx, v2.ID, shareHolder, time.Now().Add(2*time.Minute)); err != nil {
		t.Fatalf("renewing: %v", err)
	}
	if hs, err := s.Holds(ctx, v2.ID); err != nil || len(hs) != 1 || time.Until(hs[0].Until) < 90*time.Second {
		t.Fatalf("Holds after renewal = %+v, %v; want one hold about 2 minutes ahead", hs, err)
	}
	lapsed := store.Hold{Version: v2.ID, Holder: shareHolder, Until: time.Now().Add(-time.Minute).UTC().Truncate(time.Second)}
	putHold(t, s, lapsed)
	if hs, err := s.Holds(ctx, v2.ID); err != nil || len(hs) != 0 {
		t.Fatalf("Holds with only a lapsed hold = %+v, %v; want none", hs, err)
	}
	r2, _ := manifest.ParseRef("lab:v2")
	if rm, err := s.Remove(ctx, r2); err != nil || len(rm.Versions) != 1 {
		t.Fatalf("Remove of a version whose hold lapsed = %+v, %v", rm, err)
	}
	if err := s.Hold(ctx, v2.ID, "share/region-z/late", time.Now().Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Hold of a removed version = %v, want ErrNotFound", err)
	}
	if all, err := s.AllHolds(ctx); err != nil || len(all) != 2 {
		t.Fatalf("AllHolds = %+v, %v; want the live and the lapsed hold", all, err)
	}

	// Release unblocks.
	if err := s.Release(ctx, v1.ID, deploy); err != nil {
		t.Fatal(err)
	}
	r1, _ := manifest.ParseRef("lab@" + v1.ID.String())
	if _, err := s.Remove(ctx, r1); err != nil {
		t.Fatalf("Remove after Release: %v", err)
	}
	res, err = s.GC(ctx)
	if err != nil || res.FreedChunks != 3 || res.Held != 0 {
		t.Fatalf("GC after Release = %+v, %v; want the 3 chunks of both versions freed", res, err)
	}
	if err := readable(v1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("chunk of a released, removed version after gc: %v, want ErrNotFound", err)
	}

	// A task's end drops every hold it took.
	v3 := Publish(t, s, "exam", "", "exam")
	v4 := Publish(t, s, "exam", "", "exam 2")
	task := "deploy/region-b/exam/pc-01/0193a2"
	for _, v := range []*store.Version{v3, v4} {
		if err := s.Hold(ctx, v.ID, task, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Hold(ctx, v3.ID, "schedule/monday-exam", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseAll(ctx, task); err != nil {
		t.Fatal(err)
	}
	if hs, _ := s.Holds(ctx, v3.ID); len(hs) != 1 || hs[0].Holder != "schedule/monday-exam" {
		t.Fatalf("holds of v3 after ReleaseAll = %+v; want the schedule's only", hs)
	}
	if hs, _ := s.Holds(ctx, v4.ID); len(hs) != 0 {
		t.Fatalf("holds of v4 after ReleaseAll = %+v", hs)
	}

	// A hold whose manifest went behind tms's back stops gc before it deletes anything.
	if err := s.Backend().Delete(ctx, "manifests/"+v3.ID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), "schedule/monday-exam") {
		t.Fatalf("GC with a held version's manifest gone = %v; want ErrBusy naming the holder", err)
	}
	if err := readable(v3); err != nil {
		t.Fatalf("chunk of the held version after the refused gc: %v", err)
	}

	// A damaged hold is named, not guessed at.
	bad := "holds/" + v4.ID.String() + "/0000.json"
	if err := s.Backend().Put(ctx, bad, []byte(`{"holder":`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Holds(ctx, v4.ID); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Holds with a damaged hold = %v; want ErrCorrupt naming %s", err, bad)
	}
	s.Backend().Delete(ctx, bad)

	// Bad requests say what is wrong.
	for _, c := range []struct {
		name, holder string
		until        time.Time
		want         string
	}{
		{"empty holder", "", time.Now().Add(time.Minute), "empty"},
		{"control character", "deploy/\n", time.Now().Add(time.Minute), "printable"},
		{"long holder", strings.Repeat("x", store.MaxHolderLen+1), time.Now().Add(time.Minute), "more than"},
		{"past expiry", "deploy/x", time.Now().Add(-time.Second), "already past"},
		{"far expiry", "deploy/x", time.Now().Add(store.MaxHoldDuration + time.Hour), "renew"},
	} {
		if err := s.Hold(ctx, v4.ID, c.holder, c.until); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Hold = %v, want an error saying %q", c.name, err, c.want)
		}
	}

	// Keep renews until Stop, which releases.
	k, err := s.Keep(ctx, v4.ID, "share/region-d/x", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.Holds(ctx, v4.ID)
	time.Sleep(2200 * time.Millisecond)
	later, _ := s.Holds(ctx, v4.ID)
	k.Stop()
	if len(first) != 1 || len(later) != 1 || !later[0].Until.After(first[0].Until) {
		t.Fatalf("Keep did not renew: %+v then %+v", first, later)
	}
	if hs, _ := s.Holds(ctx, v4.ID); len(hs) != 0 {
		t.Fatalf("holds after Keeper.Stop = %+v", hs)
	}
}

// putHold writes a hold object as Hold would, whatever its expiry.
func putHold(t testing.TB, s *store.Store, h store.Hold) {
	t.Helper()
	b, _ := json.Marshal(h)
	var key string
	// The key is the one Hold uses: find it by holding for real, then overwrite.
	if err := s.Hold(context.Background(), h.Version, h.Holder, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	err := s.Backend().List(context.Background(), "holds/"+h.Version.String()+"/", func(o store.ObjectInfo) error {
		if got, err := s.Backend().Get(context.Background(), o.Key); err == nil {
			if p, err := store.ParseHold(o.Key, got); err == nil && p.Holder == h.Holder {
				key = o.Key
			}
		}
		return nil
	})
	if err != nil || key == "" {
		t.Fatal(fmt.Errorf("no hold of %q found: %v", h.Holder, err))
	}
	if err := s.Backend().Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}
