package arrival

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"tms/manifest"
	"tms/store"
)

// version returns a version of n distinct chunks (and a zero chunk and a repeat, which the
// arrival leaves out).
func version(n int) *store.Version {
	m := &manifest.Manifest{Hash: manifest.DefaultHash}
	for i := range n {
		m.Chunks = append(m.Chunks, manifest.DefaultHash.Sum(fmt.Appendf(nil, "chunk %d", i)))
	}
	m.Chunks = append(m.Chunks, manifest.ID{}, m.Chunks[0])
	return &store.Version{ID: manifest.DefaultHash.Sum([]byte(fmt.Sprint("version", n))), Manifest: m}
}

func TestWaitersGetChunksAsTheyArrive(t *testing.T) {
	var reg Registry
	v := version(4)
	a, ok := reg.Begin(v)
	if !ok || a.NumChunks() != 4 {
		t.Fatalf("Begin: ok %v, %d chunks; want a new arrival of 4", ok, a.NumChunks())
	}
	if reg.Get(v.ID) != a || reg.Running(v.ID) != a {
		t.Fatal("the registry does not return the arrival it began")
	}
	c0, c1, c2 := v.Manifest.Chunks[0], v.Manifest.Chunks[1], v.Manifest.Chunks[2]
	got := make(chan []byte, 1)
	go func() {
		f, err := a.Wait(context.Background(), c1)
		if err != nil {
			t.Error(err)
		}
		got <- f
	}()
	select {
	case <-got:
		t.Fatal("Wait returned before the chunk arrived")
	case <-time.After(50 * time.Millisecond):
	}
	a.Arrived(c0, []byte("frame 0")) // another chunk wakes the waiter, which waits on
	select {
	case <-got:
		t.Fatal("Wait returned for another chunk")
	case <-time.After(20 * time.Millisecond):
	}
	a.Arrived(c1, []byte("frame 1"))
	if f := <-got; string(f) != "frame 1" {
		t.Fatalf("Wait gave %q; want the frame that arrived", f)
	}
	a.Arrived(c2, nil) // in the store already
	if f, err := a.Wait(context.Background(), c2); f != nil || err != nil {
		t.Fatalf("Wait for a chunk the store held: %q, %v; want nil, nil (read the store)", f, err)
	}
	a.Committed([]manifest.ID{c0, c1})
	if f, err := a.Wait(context.Background(), c1); f != nil || err != nil {
		t.Fatalf("Wait for a committed chunk: %q, %v; want nil, nil (read the store)", f, err)
	}
	if reg.Buffered() != 0 {
		t.Fatalf("%d bytes buffered after every frame was committed", reg.Buffered())
	}
	for i, want := range []bool{true, true, true, false} {
		if a.HasIndex(i) != want {
			t.Errorf("HasIndex(%d) = %v; want %v", i, !want, want)
		}
	}
	if have, total, _ := a.Progress(); have != 3 || total != 4 {
		t.Errorf("Progress: %d of %d; want 3 of 4", have, total)
	}
	a.End(nil)
	if f, err := a.Wait(context.Background(), v.Manifest.Chunks[3]); f != nil || err != nil {
		t.Fatalf("Wait after the version was published: %q, %v; want nil, nil (read the store)", f, err)
	}
	if !a.HasIndex(3) {
		t.Error("a published version lacks a chunk")
	}
	if reg.Running(v.ID) != nil {
		t.Error("an ended arrival is still running")
	}
}

func TestFailureWakesWaitersWithItsReason(t *testing.T) {
	var reg Registry
	v := version(2)
	a, _ := reg.Begin(v)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Wait(context.Background(), v.Manifest.Chunks[1])
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cause := errors.New("peer region-a sent corrupt data")
	a.End(cause)
	err := <-errc
	if !errors.Is(err, ErrFailed) || !errors.Is(err, cause) {
		t.Fatalf("Wait after a failed arrival: %v; want ErrFailed wrapping the cause", err)
	}
	// A request after the failure learns why too, while the arrival lingers.
	if got := reg.Get(v.ID); got == nil || !errors.Is(got.Err(), cause) {
		t.Fatalf("Get after the failure: %v; want the failed arrival", got)
	}
	if a.Has(v.Manifest.Chunks[0]) {
		t.Error("a failed arrival says it has a chunk")
	}
	// A new copy begins afresh.
	if b, ok := reg.Begin(v); !ok || b == a {
		t.Fatal("Begin after a failed arrival did not begin a new one")
	}
}

func TestWaitEndsWithItsContextAndRefusesOtherChunks(t *testing.T) {
	var reg Registry
	v := version(2)
	a, _ := reg.Begin(v)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := a.Wait(ctx, v.Manifest.Chunks[0]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its context: %v; want DeadlineExceeded", err)
	}
	other := manifest.DefaultHash.Sum([]byte("not in the version"))
	if _, err := a.Wait(context.Background(), other); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Wait for a chunk not in the version: %v; want ErrNotFound", err)
	}
	a.Arrived(other, []byte("x")) // ignored
	if reg.Buffered() != 0 {
		t.Fatal("a chunk not in the version was kept")
	}
}

func TestMemoryStaysWithinTheBound(t *testing.T) {
	reg := Registry{MaxBuffered: 10}
	v := version(3)
	a, _ := reg.Begin(v)
	c := v.Manifest.Chunks
	a.Arrived(c[0], []byte("0123456")) // 7 bytes: kept
	a.Arrived(c[1], []byte("0123456")) // 14 > 10: waits for the commit
	if reg.Buffered() != 7 {
		t.Fatalf("%d bytes buffered; want 7", reg.Buffered())
	}
	if a.Has(c[1]) {
		t.Fatal("a chunk over the bound is served before its commit")
	}
	got := make(chan error, 1)
	go func() {
		f, err := a.Wait(context.Background(), c[1])
		if f != nil {
			err = fmt.Errorf("Wait gave a frame %q for a chunk that was never kept", f)
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Committed([]manifest.ID{c[1]})
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	a.Committed([]manifest.ID{c[0]})
	a.Arrived(c[2], []byte("0123456789")) // room again
	if reg.Buffered() != 10 {
		t.Fatalf("%d bytes buffered; want 10", reg.Buffered())
	}
	a.End(errors.New("stopped"))
	if reg.Buffered() != 0 {
		t.Fatalf("%d bytes buffered after the end", reg.Buffered())
	}
}

func TestSecondCopyJoinsAndEndedArrivalsAreForgotten(t *testing.T) {
	now := time.Unix(1000, 0)
	reg := Registry{Linger: time.Minute, Now: func() time.Time { return now }}
	v := version(1)
	a, _ := reg.Begin(v)
	if b, ok := reg.Begin(v); ok || b != a {
		t.Fatal("a second Begin of an arriving version did not join the first")
	}
	a.End(nil)
	select {
	case <-a.Done():
	default:
		t.Fatal("Done not closed at the end")
	}
	now = now.Add(2 * time.Minute)
	if reg.Get(v.ID) != nil {
		t.Fatal("an arrival that ended long ago is still known")
	}
}
