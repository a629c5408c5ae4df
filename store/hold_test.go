package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"tms/internal/storetest"
	"tms/manifest"
	"tms/store"
)

func TestHoldsOnDir(t *testing.T) {
	s, _ := storetest.Dir(t)
	storetest.Holds(t, s)
}

// A hold and a removal of the same version that overlap: never both succeed, so a task is never
// told its version is held while the version goes.
func TestHoldRaceWithRemove(t *testing.T) {
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	for i := range 20 {
		v := storetest.Publish(t, s, "race", "t", "race "+string(rune('a'+i)))
		r, _ := manifest.ParseRef("race@" + v.ID.String())
		var wg sync.WaitGroup
		var holdErr, rmErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			holdErr = s.Hold(ctx, v.ID, "deploy/race", time.Now().Add(time.Minute))
		}()
		go func() {
			defer wg.Done()
			_, rmErr = s.Remove(ctx, r)
		}()
		wg.Wait()
		_, gone := s.GetManifest(ctx, v.ID)
		if holdErr == nil && errors.Is(gone, store.ErrNotFound) {
			t.Fatalf("round %d: Hold succeeded and Remove (%v) deleted the version", i, rmErr)
		}
		if holdErr != nil && !errors.Is(holdErr, store.ErrNotFound) {
			t.Fatalf("round %d: Hold = %v", i, holdErr)
		}
		var he *store.HeldError
		if rmErr != nil && !errors.As(rmErr, &he) {
			t.Fatalf("round %d: Remove = %v", i, rmErr)
		}
		s.Release(ctx, v.ID, "deploy/race")
	}
}

// A removal that is deciding makes Hold wait for its outcome.
func TestHoldWaitsForRemovalMarker(t *testing.T) {
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	v := storetest.Publish(t, s, "lab", "v1", "x")
	marker := "removing/" + v.ID.String() + ".json"
	if err := s.Backend().Put(ctx, marker, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- s.Hold(ctx, v.ID, "deploy/lab/pc-1", time.Now().Add(time.Minute)) }()
	select {
	case err := <-got:
		t.Fatalf("Hold returned %v while a removal was deciding", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := s.Backend().Delete(ctx, marker); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Hold after the removal gave up: %v", err)
	}
	if hs, err := s.Holds(ctx, v.ID); err != nil || len(hs) != 1 {
		t.Fatalf("Holds = %+v, %v", hs, err)
	}
}

// Renewing a hold that stands does not step back for a removal that is deciding: the removal
// sees the hold and refuses, and the version is never unheld in between.
func TestRenewalDoesNotStepBack(t *testing.T) {
	s, _ := storetest.Dir(t)
	ctx := context.Background()
	v := storetest.Publish(t, s, "lab", "v1", "x")
	task := "deploy/lab/pc-1"
	if err := s.Hold(ctx, v.ID, task, time.Now().Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	marker := "removing/" + v.ID.String() + ".json"
	if err := s.Backend().Put(ctx, marker, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- s.Hold(ctx, v.ID, task, time.Now().Add(20*time.Minute)) }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("renewal: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a renewal waited for a removal to decide, unholding the version meanwhile")
	}
	if hs, err := s.Holds(ctx, v.ID); err != nil || len(hs) != 1 || time.Until(hs[0].Until) < 15*time.Minute {
		t.Fatalf("Holds after renewal = %+v, %v", hs, err)
	}
	s.Backend().Delete(ctx, marker)
	r, _ := manifest.ParseRef("lab:v1")
	var he *store.HeldError
	if _, err := s.Remove(ctx, r); !errors.As(err, &he) {
		t.Fatalf("Remove after renewal = %v, want a *HeldError", err)
	}
}
