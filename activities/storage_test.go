package activities_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/imageio"
	"tms/internal/pgtest"
	"tms/internal/promtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/metrics"
	"tms/state"
	"tms/store"
	"tms/transfer"
)

// sharePeer is a region serving a signed 16 MiB version over its data endpoint, counting the
// chunk requests it answers.
func sharePeer(t *testing.T) (*imageio.ImportResult, string, *atomic.Int64) {
	t.Helper()
	a, _ := storetest.Dir(t)
	v, _ := imported(t, a, 16*mib)
	if err := a.PutSignature(context.Background(), v.Version.ID, centralKey.SignVersion(v.Version.ID)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&transfer.Handler{Store: a, Region: "region-a", CentralKey: centralKey.Public()}).Routes(mux)
	var chunks atomic.Int64
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "chunk") {
			chunks.Add(1)
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(peer.Close)
	return v, peer.URL, &chunks
}

// pull runs PullFromPeer of version into region r.
func pull(t *testing.T, r *activities.Region, version manifest.ID, endpoint string) error {
	t.Helper()
	central := &activities.Central{Key: centralKey}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(central)
	env.RegisterActivity(r)
	val, err := env.ExecuteActivity(central.MintGrant, activities.GrantInput{Version: version.String(), Audience: r.ID, Server: "region-a"})
	if err != nil {
		t.Fatal(err)
	}
	var g activities.GrantResult
	val.Get(&g)
	_, err = env.ExecuteActivity(r.PullFromPeer, activities.PullInput{Version: version.String(), Endpoint: endpoint, Grant: g.Token})
	return err
}

// fullRegion is region-b holding an older 8 MiB version, with a capacity that leaves less
// room under its high-water mark (0.9) than the shared version needs.
func fullRegion(t *testing.T, need *imageio.ImportResult) (*activities.Region, *imageio.ImportResult, int64) {
	t.Helper()
	b, _ := storetest.Dir(t)
	old := storetest.Import(t, b, storetest.SampleDisk(t, 8*mib, 5), "old")
	ctx := context.Background()
	u, err := b.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What the share's check estimates from the source's stats: its stored bytes a chunk.
	n := store.DistinctChunks(need.Version.Manifest)
	incoming, _, err := b.MissingBytes(ctx, need.Version.Manifest, (need.Stats.StoredBytes+n-1)/n)
	if err != nil {
		t.Fatal(err)
	}
	// High water one byte short of what is there plus what comes.
	capacity := int64(float64(u.Used+incoming-1) / 0.9)
	return &activities.Region{ID: "region-b", Store: b, StoreCapacity: capacity, Metrics: metrics.NewRegion(metrics.RegionSources{})}, old, incoming
}

// A share into a store that cannot take it, even after evicting all it may, fails before it
// moves a chunk, naming what holds the space.
func TestShareThatCannotFitFailsBeforeMovingAByte(t *testing.T) {
	v, endpoint, chunks := sharePeer(t)
	r, old, _ := fullRegion(t, v)
	ctx := context.Background()
	if err := r.Store.Pin(ctx, old.Version.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	err := pull(t, r, v.Version.ID, endpoint)
	if !activities.ErrNoRoom.Matches(err) {
		t.Fatalf("pull into a full store = %v, want ErrNoRoom", err)
	}
	for _, want := range []string{"region-b needs ", "for lab@" + v.Version.ID.Short(), "held: old (pinned, "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := chunks.Load(); n != 0 {
		t.Errorf("the failed share fetched %d chunks", n)
	}
	if has, _ := r.Store.HasChunk(ctx, v.Version.Manifest.Chunks[0]); has {
		t.Error("the failed share stored a chunk")
	}
	if _, err := r.Store.GetManifest(ctx, old.Version.ID); err != nil {
		t.Fatalf("the pinned version went: %v", err)
	}
}

// A share that fits once the oldest unheld version goes evicts it, then moves the version.
func TestShareEvictsTheOldestToFit(t *testing.T) {
	v, endpoint, chunks := sharePeer(t)
	r, old, _ := fullRegion(t, v)
	ctx := context.Background()
	if err := pull(t, r, v.Version.ID, endpoint); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Store.GetManifest(ctx, old.Version.ID); err == nil {
		t.Fatal("the old version is still there")
	}
	if _, err := r.Store.GetManifest(ctx, v.Version.ID); err != nil || chunks.Load() == 0 {
		t.Fatalf("the shared version is not there (%v) or came without chunk requests", err)
	}
	if got := promtest.Value(promtest.Gather(t, r.Metrics.Registry()), "tms_store_evictions_total", "reason", "share"); got != 1 {
		t.Errorf("tms_store_evictions_total{reason=share} = %v, want 1", got)
	}
}

// MakeRoom holds a version before it arrives, so eviction never takes it once it is there,
// and evicts what it must for its bytes.
func TestMakeRoomReservesAndEvicts(t *testing.T) {
	v, _, _ := sharePeer(t)
	r, old, incoming := fullRegion(t, v)
	ctx := context.Background()
	res, err := r.MakeRoom(ctx, activities.MakeRoomInput{Version: v.Version.ID.String(), Bytes: incoming,
		Holder: "plan/exam-week", Until: time.Now().Add(30 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Evicted) != 1 || res.Evicted[0].Version != old.Version.ID.String() || res.Evicted[0].Name != "old" || res.Capacity != r.StoreCapacity {
		t.Fatalf("MakeRoom = %+v, want old evicted", res)
	}
	hs, err := r.Store.Holds(ctx, v.Version.ID)
	if err != nil || len(hs) != 1 || hs[0].Holder != "plan/exam-week" || hs[0].Until.After(time.Now().Add(store.MaxHoldDuration)) {
		t.Fatalf("holds of the version to come = %+v, %v; want plan/exam-week, within MaxHoldDuration", hs, err)
	}
	// More than the store can ever take.
	_, err = r.MakeRoom(ctx, activities.MakeRoomInput{Version: v.Version.ID.String(), Bytes: 10 * r.StoreCapacity})
	if !activities.ErrNoRoom.Matches(err) || !strings.Contains(err.Error(), "region-b needs ") {
		t.Fatalf("MakeRoom beyond capacity = %v, want ErrNoRoom", err)
	}
	if _, err := r.MakeRoom(ctx, activities.MakeRoomInput{Version: "nope"}); !activities.ErrBadVersion.Matches(err) {
		t.Fatalf("MakeRoom of a bad version = %v", err)
	}
}

func TestAdminPinUnpinAndImages(t *testing.T) {
	b, _ := storetest.Dir(t)
	ctx := context.Background()
	v := storetest.Publish(t, b, "win11", "v1", "x", "y")
	r := &activities.Region{ID: "region-b", Store: b, StoreCapacity: 1 << 30}
	res, err := r.Admin(ctx, activities.AdminInput{Op: activities.OpPin, Image: "win11:v1", By: "ana"})
	if err != nil || !res.Changed || len(res.Images) != 1 || res.Images[0].Version != v.ID.String() {
		t.Fatalf("pin = %+v, %v", res, err)
	}
	if res, err = r.Admin(ctx, activities.AdminInput{Op: activities.OpPin, Image: "win11@" + v.ID.Short()}); err != nil || res.Changed {
		t.Fatalf("second pin = %+v, %v; want unchanged", res, err)
	}
	res, err = r.Admin(ctx, activities.AdminInput{Op: activities.OpImages})
	if err != nil || len(res.Images) != 1 || res.ImageCount != 1 || res.Store == nil || res.Store.Capacity != 1<<30 || res.Store.HighWater != 0.9 {
		t.Fatalf("images = %+v, %v", res, err)
	}
	if im := res.Images[0]; !im.Pinned || im.PinnedBy != "ana" || im.Name != "win11" || strings.Join(im.Tags, ",") != "v1" || im.StoredBytes == 0 || im.Stored.IsZero() {
		t.Fatalf("image = %+v", im)
	}
	ref, _ := manifest.ParseRef("win11:v1")
	if _, err := b.Remove(ctx, ref); err == nil || !strings.Contains(err.Error(), "pin (by ana") {
		t.Fatalf("rm of a pinned version = %v, want a refusal naming the pin", err)
	}
	if res, err = r.Admin(ctx, activities.AdminInput{Op: activities.OpUnpin, Image: "win11:v1"}); err != nil || !res.Changed {
		t.Fatalf("unpin = %+v, %v", res, err)
	}
	if _, err := r.Admin(ctx, activities.AdminInput{Op: activities.OpPin, Image: "win11:v9"}); !activities.ErrNotFound.Matches(err) {
		t.Fatalf("pin of a tag the region lacks = %v, want ErrNotFound", err)
	}
	if _, err := r.Admin(ctx, activities.AdminInput{Op: activities.OpPin, Image: "win11:v1", By: "a\x07"}); !activities.ErrBadInput.Matches(err) {
		t.Fatalf("pin by an unprintable name = %v, want ErrBadInput", err)
	}
	if _, err := r.Admin(ctx, activities.AdminInput{Op: activities.OpPin, Image: "win11:::"}); !activities.ErrBadImage.Matches(err) {
		t.Fatalf("pin of a malformed image = %v, want ErrBadImage", err)
	}
	if !activities.ReadOp(activities.OpImages) || activities.ReadOp(activities.OpPin) || !activities.KnownOp(activities.OpUnpin) {
		t.Fatal("images must be a read op, pin and unpin changes")
	}
}

// Through the relay as through a peer: a share that cannot fit fails before it moves a chunk,
// and the staged stats of the source give the estimate while the upload runs.
func TestRelayShareThatCannotFitFailsBeforeMovingAByte(t *testing.T) {
	ctx := context.Background()
	a, _ := storetest.Dir(t)
	v, _ := imported(t, a, 16*mib)
	relay, _ := storetest.Dir(t)
	src := &activities.Region{ID: "region-a", Store: a, Relay: relay}
	if _, err := src.PushToRelay(ctx, activities.RelayInput{Version: v.Version.ID.String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Backend().Stat(ctx, transfer.StagingStatsKey(v.Version.ID)); err == nil {
		t.Error("the push left its staged stats behind")
	}
	// While an upload runs, its staged stats say what the version takes.
	if err := transfer.StageStats(ctx, relay, v.Version.ID, store.Stats{StoredBytes: 12345}); err != nil {
		t.Fatal(err)
	}
	if st, err := (transfer.WaitingSource{S: relay}).GetStats(ctx, v.Version.ID); err != nil || st.StoredBytes != 12345 {
		t.Fatalf("staged stats = %+v, %v", st, err)
	}
	relay.Backend().Delete(ctx, transfer.StagingStatsKey(v.Version.ID))
	if st, err := (transfer.WaitingSource{S: relay}).GetStats(ctx, v.Version.ID); err != nil || st.StoredBytes != v.Stats.StoredBytes {
		t.Fatalf("published stats = %+v, %v; want %d stored bytes", st, err, v.Stats.StoredBytes)
	}

	r, old, _ := fullRegion(t, v)
	r.Relay = relay
	if err := r.Store.Pin(ctx, old.Version.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	_, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.Version.ID.String()})
	if !activities.ErrNoRoom.Matches(err) || !strings.Contains(err.Error(), "held: old (pinned, ") {
		t.Fatalf("relay pull into a full store = %v, want ErrNoRoom naming the pin", err)
	}
	for _, c := range v.Version.Manifest.Chunks {
		if c.IsZero() {
			continue
		}
		if has, _ := r.Store.HasChunk(ctx, c); has {
			t.Fatal("the failed relay pull stored a chunk")
		}
	}
	// Unpinned, the old version makes room and the pull goes through.
	if _, err := r.Store.Unpin(ctx, old.Version.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PullFromRelay(ctx, activities.RelayInput{Version: v.Version.ID.String()}); err != nil {
		t.Fatal(err)
	}
}

// A report never waits for the store's description: the first goes without its images while
// the description runs in the background, and later ones carry it.
func TestStatusDescribesTheStoreInTheBackground(t *testing.T) {
	ctx := context.Background()
	b, _ := storetest.Dir(t)
	v := storetest.Publish(t, b, "lab", "v1", "x")
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "region.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	r := &activities.Region{ID: "region-b", Store: b, Inventory: inv, StoreCapacity: 1 << 30}
	st, err := r.Status(ctx, activities.StatusInput{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Summary.ImagesListed || st.Summary.Capacity != 1<<30 || st.Summary.HighWater != 0.9 || st.Summary.LowWater != 0.8 {
		t.Fatalf("first report: %+v; want the store's figures, its images not yet", st.Summary)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !st.Summary.ImagesListed {
		if time.Now().After(deadline) {
			t.Fatal("no report carried the store's images within 10s")
		}
		time.Sleep(20 * time.Millisecond)
		if st, err = r.Status(ctx, activities.StatusInput{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(st.Summary.Images) != 1 || st.Summary.ImageCount != 1 || st.Summary.Images[0].Version != v.ID.String() {
		t.Fatalf("report: %+v", st.Summary)
	}
	// A pin shows at the next report, without describing the store again.
	if err := b.Pin(ctx, v.ID, "ana"); err != nil {
		t.Fatal(err)
	}
	if st, err = r.Status(ctx, activities.StatusInput{}); err != nil || !st.Summary.Images[0].Pinned {
		t.Fatalf("report after a pin: %+v, %v", st.Summary, err)
	}
}
