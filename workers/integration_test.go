package workers_test

import (
	"context"
	"crypto/sha256"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/internal/temporaltest"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devtemporal"
	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/transfer"
	"tms/workers"
	"tms/workflows"
)

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestShareImageOnRealTemporal runs ShareImage on an embedded Temporal server with the central
// worker and three region workers: a peer pull from region-a to region-b, then, with region-a's
// data endpoint unreachable, a relay from region-a to region-c through central storage.
func TestShareImageOnRealTemporal(t *testing.T) {
	srv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := client.Dial(client.Options{HostPort: srv.Address()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	relay, _ := storetest.Dir(t)
	stores := map[string]*store.Store{}
	for _, id := range []string{"region-a", "region-b", "region-c"} {
		stores[id], _ = storetest.Dir(t)
	}

	disk := filepath.Join(t.TempDir(), "disk.raw")
	sampledisk.Write(disk, sampledisk.Options{Size: 16 << 20, Seed: 9})
	res, err := imageio.Import(context.Background(), stores["region-a"], disk, imageio.ImportOptions{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(disk)
	want := sha256.Sum256(raw)
	if err := stores["region-a"].PutSignature(context.Background(), res.Version.ID, key.SignVersion(res.Version.ID)); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	(&transfer.Handler{Store: stores["region-a"], Region: "region-a", CentralKey: key.Public()}).Routes(mux)
	peerA := httptest.NewServer(mux)
	defer peerA.Close()

	cat, err := state.OpenCatalog(context.Background(), pgtest.StateOr(t, filepath.Join(t.TempDir(), "central.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	bg := context.Background()
	cat.UpsertRegion(bg, state.Region{ID: "region-a", Endpoint: peerA.URL, Labels: map[string]string{"site": "north"}})
	cat.UpsertRegion(bg, state.Region{ID: "region-b", Labels: map[string]string{"site": "north"}})
	cat.UpsertRegion(bg, state.Region{ID: "region-c", Labels: map[string]string{"site": "south"}})
	cat.RecordVersion(bg, state.Version{ID: res.Version.ID, Name: "lab", Created: res.Version.Manifest.Meta.Created,
		DiskSize: res.DiskSize, ChunkSize: res.Version.Manifest.ChunkSize, StoredBytes: res.Stats.StoredBytes}, "latest")
	if err := cat.SetLocation(bg, res.Version.ID, "region-a", state.Verified); err != nil {
		t.Fatal(err)
	}
	ws := []interface {
		Start() error
		Stop()
	}{
		workers.NewCentral(c, &activities.Central{Catalog: activities.StateCatalog{C: cat}, Key: key}),
	}
	for id, s := range stores {
		ws = append(ws, workers.NewRegion(c, &activities.Region{ID: id, Store: s, Relay: relay, CentralKey: key.Public()}))
	}
	for _, w := range ws {
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	share := func(target string) workflows.ShareImageResult {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.ShareWorkflowID("lab", target), TaskQueue: activities.CentralQueue},
			workflows.ShareImage, workflows.ShareImageInput{Image: "lab", Target: target})
		if err != nil {
			t.Fatal(err)
		}
		var out workflows.ShareImageResult
		if err := run.Get(ctx, &out); err != nil {
			t.Fatalf("share to %s: %v", target, err)
		}
		temporaltest.SaveHistory(t, c, run.GetID(), run.GetRunID(), "share-"+target+"-"+string(out.Path))
		return out
	}
	check := func(target string) {
		t.Helper()
		v, err := stores[target].GetManifest(ctx, res.Version.ID)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := stores[target].GetSignature(ctx, res.Version.ID)
		if err != nil {
			t.Fatalf("%s: the shared version came without its signature: %v", target, err)
		}
		if err := key.Public().VerifyManifest(res.Version.ID, v.Encoded, sig); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		out := filepath.Join(t.TempDir(), target+".raw")
		if _, err := imageio.Export(ctx, stores[target], v, out, imageio.ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		if sha256.Sum256(b) != want {
			t.Fatalf("%s exports a different disk", target)
		}
		locs, err := cat.Locations(ctx, res.Version.ID)
		if err != nil {
			t.Fatal(err)
		}
		recorded := false
		for _, l := range locs {
			recorded = recorded || l.Region.ID == target && l.State == state.Verified
		}
		if !recorded {
			t.Fatalf("%s not recorded as a verified location", target)
		}
	}

	out := share("region-b")
	if out.Path != "peer" || out.Source != "region-a" || out.MovedBytes != res.Stats.StoredBytes {
		t.Fatalf("share to region-b: %+v", out)
	}
	check("region-b")

	// region-a's and region-b's data endpoints become unreachable from region-c.
	for _, id := range []string{"region-a", "region-b"} {
		r, _ := cat.GetRegion(bg, id)
		r.Endpoint = closedPort(t)
		cat.UpsertRegion(bg, r)
	}
	out = share("region-c")
	if out.Path != "relay" || out.MovedBytes != res.Stats.StoredBytes {
		t.Fatalf("share to region-c: %+v", out)
	}
	check("region-c")

	out = share("region-c")
	if out.Path != "local" {
		t.Fatalf("sharing again: %+v", out)
	}
}
