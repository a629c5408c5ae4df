package activities_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/arrival"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/transfer"
)

// relayed stages version v of src in relay as PushToRelay does (signature with sig, staged
// manifest) with only the first `chunks` of its distinct chunks, and returns the rest.
func relayed(t *testing.T, src, relay *store.Store, v *store.Version, sig *signing.Signature, chunks int) []manifest.ID {
	t.Helper()
	ctx := context.Background()
	if sig != nil {
		if err := relay.PutSignature(ctx, v.ID, *sig); err != nil {
			t.Fatal(err)
		}
	}
	if err := transfer.Stage(ctx, relay, v, nil); err != nil {
		t.Fatal(err)
	}
	var rest []manifest.ID
	seen := map[manifest.ID]bool{}
	for _, c := range v.Manifest.Chunks {
		if c.IsZero() || seen[c] {
			continue
		}
		seen[c] = true
		if len(seen) > chunks {
			rest = append(rest, c)
			continue
		}
		copyChunk(t, src, relay, c)
	}
	return rest
}

func copyChunk(t *testing.T, from, to *store.Store, c manifest.ID) {
	t.Helper()
	f, err := from.Backend().Get(context.Background(), store.ChunkKey(c))
	if err != nil {
		t.Fatal(err)
	}
	if err := to.Backend().Put(context.Background(), store.ChunkKey(c), f); err != nil {
		t.Fatal(err)
	}
}

// relayPull is a version imported into src and relayed in part to relay (as relayed does),
// and the empty store dst of the region that will pull it.
type relayPull struct {
	src, relay, dst *store.Store
	v               *store.Version
	want            [32]byte      // the imported disk's sum
	rest            []manifest.ID // the chunks not yet in the relay
}

// newRelayPull imports a size-byte sample disk into src and relays its first chunks to relay,
// with the signature sig gives for the version (nil: none).
func newRelayPull(t *testing.T, size int64, sig func(manifest.ID) *signing.Signature, chunks int) relayPull {
	t.Helper()
	var p relayPull
	p.src, _ = storetest.Dir(t)
	p.relay, _ = storetest.Dir(t)
	p.dst, _ = storetest.Dir(t)
	imp, want := imported(t, p.src, size)
	p.v, p.want = imp.Version, want
	p.rest = relayed(t, p.src, p.relay, p.v, sig(p.v.ID), chunks)
	return p
}

// signed is central's signature of a version.
func signed(id manifest.ID) *signing.Signature { s := centralKey.SignVersion(id); return &s }

// awaitVersion runs AwaitVersion for at most d.
func awaitVersion(r *activities.Region, id manifest.ID, d time.Duration) (activities.AwaitVersionResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.AwaitVersion(ctx, activities.AwaitVersionInput{Version: id.String(), Poll: 20 * time.Millisecond})
}

// TestPullAnnouncesTheArrivingVersion pulls a version from a relay that holds only part of
// it: the region announces it once its signature checks, serves each chunk here and none
// that is not, and publishes the version only when the copy ends. A second pull of the same
// version meanwhile joins the first and moves nothing.
func TestPullAnnouncesTheArrivingVersion(t *testing.T) {
	ctx := context.Background()
	p := newRelayPull(t, 16*mib, signed, 5)
	src, relay, dst, v, want, rest := p.src, p.relay, p.dst, p.v, p.want, p.rest
	reg := &arrival.Registry{}
	r := &activities.Region{ID: "region-b", Store: dst, Relay: relay, CentralKey: centralKey.Public(), Arrivals: reg}

	type pulled struct {
		res activities.MoveResult
		err error
	}
	first := make(chan pulled, 1)
	go func() {
		res, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.ID.String()})
		first <- pulled{res, err}
	}()
	aw, err := awaitVersion(r, v.ID, 10*time.Second)
	if err != nil || !aw.Arriving {
		t.Fatalf("AwaitVersion: %+v, %v; want the version arriving", aw, err)
	}
	a := reg.Running(v.ID)
	if a == nil {
		t.Fatal("no arrival while the pull runs")
	}
	if _, err := dst.GetSignature(ctx, v.ID); err != nil {
		t.Fatalf("the arriving version's signature is not in the store for the agents: %v", err)
	}
	if ok, _ := dst.HasVersion(ctx, v.ID); ok {
		t.Fatal("the version is published before its chunks are here")
	}
	// The chunks in the relay arrive; the others do not.
	deadline := time.Now().Add(10 * time.Second)
	for have, _, _ := a.Progress(); have < 5 && time.Now().Before(deadline); have, _, _ = a.Progress() {
		time.Sleep(20 * time.Millisecond)
	}
	if have, total, _ := a.Progress(); have != 5 || total != 5+len(rest) {
		t.Fatalf("%d of %d chunks arrived; want 5 of %d", have, total, 5+len(rest))
	}
	if a.Has(rest[0]) {
		t.Fatal("a chunk not yet in the relay is announced")
	}

	second := make(chan pulled, 1)
	go func() {
		res, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.ID.String()})
		second <- pulled{res, err}
	}()
	time.Sleep(200 * time.Millisecond)
	for _, c := range rest {
		copyChunk(t, src, relay, c)
	}
	p1, p2 := <-first, <-second
	if p1.err != nil || p2.err != nil {
		t.Fatalf("pulls: %v, %v", p1.err, p2.err)
	}
	if p1.res.Moved != int64(5+len(rest)) || p2.res.Moved != 0 {
		t.Fatalf("the first pull moved %d chunks, the second %d; want %d and 0 (it joins)", p1.res.Moved, p2.res.Moved, 5+len(rest))
	}
	if a.Err() != nil || reg.Running(v.ID) != nil {
		t.Fatalf("arrival after the pull: err %v, running %v", a.Err(), reg.Running(v.ID) != nil)
	}
	if exportedSum(t, dst, v.ID) != want {
		t.Fatal("the pulled version exports another disk")
	}
	if aw, err := awaitVersion(r, v.ID, time.Second); err != nil || aw.Arriving {
		t.Fatalf("AwaitVersion after the pull: %+v, %v; want published", aw, err)
	}
}

// TestOnlySignedVersionsAreAnnounced pulls versions without a signature, and with one by
// another key: neither is served before it is here (a deploy then refuses it as before).
func TestOnlySignedVersionsAreAnnounced(t *testing.T) {
	other, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		sig  func(manifest.ID) *signing.Signature
	}{
		{"unsigned", func(manifest.ID) *signing.Signature { return nil }},
		{"another key", func(id manifest.ID) *signing.Signature { s := other.SignVersion(id); return &s }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			p := newRelayPull(t, 8*mib, c.sig, 2)
			src, relay, dst, v, rest := p.src, p.relay, p.dst, p.v, p.rest
			reg := &arrival.Registry{}
			r := &activities.Region{ID: "region-b", Store: dst, Relay: relay, CentralKey: centralKey.Public(), Arrivals: reg}
			done := make(chan error, 1)
			go func() {
				_, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.ID.String()})
				done <- err
			}()
			if _, err := awaitVersion(r, v.ID, time.Second); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("AwaitVersion of a version arriving %s: %v; want it to go on waiting", c.name, err)
			}
			if reg.Get(v.ID) != nil {
				t.Fatalf("a version arriving %s is announced", c.name)
			}
			for _, ch := range rest {
				copyChunk(t, src, relay, ch)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFailedPullEndsTheArrivalWithItsReason: a relay chunk that does not match its id fails
// the pull, and whoever waits on the arrival learns why.
func TestFailedPullEndsTheArrivalWithItsReason(t *testing.T) {
	ctx := context.Background()
	p := newRelayPull(t, 8*mib, signed, 2)
	src, relay, dst, v, rest := p.src, p.relay, p.dst, p.v, p.rest
	reg := &arrival.Registry{}
	r := &activities.Region{ID: "region-b", Store: dst, Relay: relay, CentralKey: centralKey.Public(), Arrivals: reg}
	done := make(chan error, 1)
	go func() {
		_, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.ID.String()})
		done <- err
	}()
	if aw, err := awaitVersion(r, v.ID, 10*time.Second); err != nil || !aw.Arriving {
		t.Fatalf("AwaitVersion: %+v, %v", aw, err)
	}
	a := reg.Running(v.ID)
	waited := make(chan error, 1)
	go func() {
		_, err := a.Wait(ctx, rest[len(rest)-1])
		waited <- err
	}()
	// A chunk whose bytes are another chunk's.
	f, err := src.Backend().Get(ctx, store.ChunkKey(rest[1]))
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Backend().Put(ctx, store.ChunkKey(rest[0]), f); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if appErrType(err) != string(activities.ErrSourceCorrupt) {
		t.Fatalf("pull: %v; want SourceCorrupt", err)
	}
	if werr := <-waited; !errors.Is(werr, arrival.ErrFailed) || !errors.Is(werr, transfer.ErrSourceCorrupt) {
		t.Fatalf("a waiter learned %v; want the pull's failure", werr)
	}
	if ok, _ := dst.HasVersion(ctx, v.ID); ok {
		t.Fatal("a failed pull published the version")
	}
}

// TestPrepareTaskHoldsAnArrivingVersion: a deploy's task is prepared on a version the region
// is still pulling (a version neither here nor arriving is refused, as before); its hold,
// taken before the version is published, keeps the version from removal once it is.
func TestPrepareTaskHoldsAnArrivingVersion(t *testing.T) {
	ctx := context.Background()
	p := newRelayPull(t, 8*mib, signed, 2)
	src, relay, dst, v, rest := p.src, p.relay, p.dst, p.v, p.rest
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "inventory.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	if err := inv.Enroll(ctx, "52:54:00:00:07:01", "pc-07"); err != nil {
		t.Fatal(err)
	}
	reg := &arrival.Registry{}
	r := &activities.Region{ID: "region-b", Store: dst, Relay: relay, Inventory: inv, CentralKey: centralKey.Public(), Arrivals: reg}
	task := "deploy/region-b/lab/lab/pc-07@run-1"
	in := activities.TaskInput{Task: task, TerminalRef: "pc-07", Kind: "deploy", Version: v.ID.String(), Expires: time.Now().Add(time.Hour)}
	if _, err := r.PrepareTask(ctx, in); !activities.ErrNotHere.Matches(err) {
		t.Fatalf("PrepareTask of a version neither here nor arriving: %v; want NotHere", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.ID.String()})
		done <- err
	}()
	if aw, err := awaitVersion(r, v.ID, 10*time.Second); err != nil || !aw.Arriving {
		t.Fatalf("AwaitVersion: %+v, %v", aw, err)
	}
	if _, err := r.PrepareTask(ctx, in); err != nil {
		t.Fatalf("PrepareTask of an arriving version: %v", err)
	}
	for _, c := range rest {
		copyChunk(t, src, relay, c)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ref, _ := manifest.ParseRef("lab@" + v.ID.String())
	var he *store.HeldError
	if _, err := dst.Remove(ctx, ref); !errors.As(err, &he) || !strings.Contains(err.Error(), task) {
		t.Fatalf("image rm of the version a task prepared while it arrived: %v; want it refused, naming %s", err, task)
	}
}
