package activities_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"tms/internal/storetest"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/imageio"
	"tms/internal/promtest"
	"tms/manifest"
	"tms/metrics"
	"tms/signing"
	"tms/store"
	"tms/transfer"
	"tms/wanrate"
)

const mib = 1 << 20

// centralKey is the test's central key.
var centralKey = func() *signing.PrivateKey {
	k, err := signing.GenerateKey()
	if err != nil {
		panic(err)
	}
	return k
}()

func imported(t *testing.T, s *store.Store, size int64) (*imageio.ImportResult, [32]byte) {
	t.Helper()
	disk := storetest.SampleDisk(t, size, 3)
	return storetest.Import(t, s, disk, "lab"), storetest.FileSum(t, disk)
}

func exportedSum(t *testing.T, s *store.Store, id manifest.ID) [32]byte {
	t.Helper()
	v, err := s.GetManifest(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.raw")
	if _, err := imageio.Export(context.Background(), s, v, out, imageio.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	return sha256.Sum256(b)
}

func TestPullFromPeer(t *testing.T) {
	a, _ := storetest.Dir(t)
	b, _ := storetest.Dir(t)
	v, want := imported(t, a, 16*mib)
	if err := a.PutSignature(context.Background(), v.Version.ID, centralKey.SignVersion(v.Version.ID)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&transfer.Handler{Store: a, Region: "region-a", CentralKey: centralKey.Public()}).Routes(mux)
	peer := httptest.NewServer(mux)
	defer peer.Close()

	central := &activities.Central{Key: centralKey}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(central)
	mb := metrics.NewRegion(metrics.RegionSources{})
	env.RegisterActivity(&activities.Region{ID: "region-b", Store: b, Metrics: mb})
	val, err := env.ExecuteActivity(central.MintGrant, activities.GrantInput{Version: v.Version.ID.String(), Audience: "region-b", Server: "region-a"})
	if err != nil {
		t.Fatal(err)
	}
	var g activities.GrantResult
	val.Get(&g)

	var r *activities.Region
	val, err = env.ExecuteActivity(r.PullFromPeer, activities.PullInput{Version: v.Version.ID.String(), Endpoint: peer.URL, Grant: g.Token})
	if err != nil {
		t.Fatal(err)
	}
	var mv activities.MoveResult
	val.Get(&mv)
	if mv.MovedBytes != v.Stats.StoredBytes || exportedSum(t, b, v.Version.ID) != want {
		t.Fatalf("pulled %d of %d bytes, or a different disk", mv.MovedBytes, v.Stats.StoredBytes)
	}
	if _, err := b.GetSignature(context.Background(), v.Version.ID); err != nil {
		t.Fatalf("the pulled version came without its signature: %v", err)
	}
	if got := promtest.Value(promtest.Gather(t, mb.Registry()), "tms_transfer_bytes_total", "path", "peer", "direction", "in"); got != float64(mv.MovedBytes) {
		t.Errorf("peer bytes in = %v, the pull moved %d", got, mv.MovedBytes)
	}

	// A grant for another version gets nothing, and the failure says why.
	other := manifest.BLAKE3.Sum([]byte("other"))
	bad := centralKey.MintGrant(signing.Grant{Version: other, Server: "region-a", Expires: time.Now().Add(time.Minute)})
	c, _ := storetest.Dir(t)
	env2 := s.NewTestActivityEnvironment()
	env2.RegisterActivity(&activities.Region{ID: "region-c", Store: c})
	_, err = env2.ExecuteActivity(r.PullFromPeer, activities.PullInput{Version: v.Version.ID.String(), Endpoint: peer.URL, Grant: bad})
	if err == nil {
		t.Fatal("a pull with a grant for another version succeeded")
	}
	_, err = env2.ExecuteActivity(r.PullFromPeer, activities.PullInput{Version: v.Version.ID.String(), Endpoint: "ftp://x", Grant: bad})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != "BadEndpoint" || !ae.NonRetryable() {
		t.Fatalf("bad endpoint: %v", err)
	}
}

// TestRelayIsPipelined runs the push and the pull at the same time, as ShareImage does: the
// pull starts before the push has published anything and ends with every chunk checked.
func TestRelayIsPipelined(t *testing.T) {
	src, _ := storetest.Dir(t)
	dst, _ := storetest.Dir(t)
	relay, _ := storetest.Dir(t)
	v, want := imported(t, src, 32*mib)
	if err := src.PutSignature(context.Background(), v.Version.ID, centralKey.SignVersion(v.Version.ID)); err != nil {
		t.Fatal(err)
	}
	var s testsuite.WorkflowTestSuite
	var r *activities.Region
	in := activities.RelayInput{Version: v.Version.ID.String()}

	ma, mb := metrics.NewRegion(metrics.RegionSources{}), metrics.NewRegion(metrics.RegionSources{})
	var wg sync.WaitGroup
	var pullErr error
	var pulled activities.MoveResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		env := s.NewTestActivityEnvironment()
		env.RegisterActivity(&activities.Region{ID: "region-b", Store: dst, Relay: relay, Metrics: mb})
		val, err := env.ExecuteActivity(r.PullFromRelay, in)
		if pullErr = err; err == nil {
			val.Get(&pulled)
		}
	}()
	time.Sleep(300 * time.Millisecond) // the pull is waiting for the manifest now
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(&activities.Region{ID: "region-a", Store: src, Relay: relay, Metrics: ma})
	val, err := env.ExecuteActivity(r.PushToRelay, in)
	if err != nil {
		t.Fatal(err)
	}
	var pushed activities.MoveResult
	val.Get(&pushed)
	wg.Wait()
	if pullErr != nil {
		t.Fatal(pullErr)
	}
	if exportedSum(t, dst, v.Version.ID) != want {
		t.Fatal("relayed version exports a different disk")
	}
	if _, err := dst.GetSignature(context.Background(), v.Version.ID); err != nil {
		t.Fatalf("the relayed version came without its signature: %v", err)
	}
	if pulled.MovedBytes != v.Stats.StoredBytes {
		t.Errorf("pulled %d bytes, the version stores %d", pulled.MovedBytes, v.Stats.StoredBytes)
	}
	// Each side counts its relay bytes: out of region-a, into region-b.
	if got := promtest.Value(promtest.Gather(t, ma.Registry()), "tms_transfer_bytes_total", "path", "relay", "direction", "out"); got != float64(pushed.MovedBytes) || got == 0 {
		t.Errorf("relay bytes out = %v, the push moved %d", got, pushed.MovedBytes)
	}
	fb := promtest.Gather(t, mb.Registry())
	if got := promtest.Value(fb, "tms_transfer_bytes_total", "path", "relay", "direction", "in"); got != float64(pulled.MovedBytes) {
		t.Errorf("relay bytes in = %v, the pull moved %d", got, pulled.MovedBytes)
	}
	if got := promtest.Value(fb, "tms_chunks_verified_total", "path", "relay"); got != float64(pulled.Moved) {
		t.Errorf("relay chunks verified = %v, the pull moved %d", got, pulled.Moved)
	}
	if _, err := relay.Backend().Get(context.Background(), transfer.StagingKey(v.Version.ID)); err == nil {
		t.Error("the staged manifest was left in the relay")
	}
	if rep, err := relay.Verify(context.Background(), 4, nil); err != nil || rep.Versions != 1 || len(rep.Problems) != 0 {
		t.Fatalf("relay store: %+v, %v", rep, err)
	}
}

// TestTransfersKeepTheirCaps runs each transfer activity under a cap of 4 MB/s, set by the
// transfer's rate under a faster region cap, or by the region's cap alone, and checks how long
// each took: no faster than the cap allows (less 10%), and not much slower (the activity's own
// work is in the time too: the store's syncs on a busy machine; package transfer measures the
// pace itself within 5%). Without the cap each takes a tenth of a second. Both sides of a
// relay apply the caps.
func TestTransfersKeepTheirCaps(t *testing.T) {
	if testing.Short() {
		t.Skip("three 2-second transfers")
	}
	const rate = 4_000_000
	a, _ := storetest.Dir(t)
	relay, _ := storetest.Dir(t)
	v, want := imported(t, a, 16*mib)
	mux := http.NewServeMux()
	(&transfer.Handler{Store: a, Region: "region-a", CentralKey: centralKey.Public()}).Routes(mux)
	peer := httptest.NewServer(mux)
	defer peer.Close()
	grant := centralKey.MintGrant(signing.Grant{Version: v.Version.ID, Audience: "region-b", Server: "region-a", Expires: time.Now().Add(time.Minute)})
	expected := time.Duration(float64(v.Stats.StoredBytes) / rate * float64(time.Second))

	var s testsuite.WorkflowTestSuite
	var r *activities.Region
	timed := func(name string, reg *activities.Region, activity any, in any) {
		t.Helper()
		env := s.NewTestActivityEnvironment()
		env.RegisterActivity(reg)
		start := time.Now()
		if _, err := env.ExecuteActivity(activity, in); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		el := time.Since(start)
		t.Logf("%s: %d bytes in %s (%s at 4 MB/s)", name, v.Stats.StoredBytes, el.Round(time.Millisecond), expected.Round(time.Millisecond))
		if el < expected*9/10 || el > expected*3/2 {
			t.Errorf("%s took %s; at 4 MB/s it takes %s", name, el.Round(time.Millisecond), expected.Round(time.Millisecond))
		}
	}
	b, _ := storetest.Dir(t)
	timed("peer pull at its own rate", &activities.Region{ID: "region-b", Store: b, WAN: wanrate.NewBucket(5*rate, nil)}, r.PullFromPeer,
		activities.PullInput{Version: v.Version.ID.String(), Endpoint: peer.URL, Grant: grant, Rate: rate})
	if exportedSum(t, b, v.Version.ID) != want {
		t.Fatal("the paced pull exports a different disk")
	}
	timed("relay push at the region's cap", &activities.Region{ID: "region-a", Store: a, Relay: relay, WAN: wanrate.NewBucket(rate, nil)}, r.PushToRelay,
		activities.RelayInput{Version: v.Version.ID.String(), Rate: 5 * rate})
	c, _ := storetest.Dir(t)
	timed("relay pull at its own rate", &activities.Region{ID: "region-c", Store: c, Relay: relay, WAN: wanrate.NewBucket(0, nil)}, r.PullFromRelay,
		activities.RelayInput{Version: v.Version.ID.String(), Rate: rate})
	if exportedSum(t, c, v.Version.ID) != want {
		t.Fatal("the paced relay exports a different disk")
	}

	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(&activities.Region{ID: "region-d", Store: c})
	_, err := env.ExecuteActivity(r.PullFromPeer, activities.PullInput{Version: v.Version.ID.String(), Endpoint: peer.URL, Grant: grant, Rate: -5})
	if !activities.ErrBadInput.Matches(err) {
		t.Fatalf("a negative rate: %v; want BadInput", err)
	}
}
