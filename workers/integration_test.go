package workers_test

import (
	"context"
	"crypto/sha256"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"

	"tms/activities"
	"tms/devtemporal"
	"tms/imageio"
	"tms/internal/sampledisk"
	"tms/manifest"
	"tms/store"
	"tms/transfer"
	"tms/workers"
	"tms/workflows"
)

// memCatalog is an in-memory catalog for this test; the SQLite catalog has its own tests.
type memCatalog struct {
	mu       sync.Mutex
	regions  map[string]activities.Location
	versions map[string]manifest.ID // image ref -> version
	verified map[manifest.ID]map[string]bool
}

func (m *memCatalog) Resolve(_ context.Context, ref string) (manifest.ID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.versions[ref]
	if !ok {
		return id, &store.Error{Kind: store.ErrNotFound, What: "image " + ref}
	}
	return id, nil
}

func (m *memCatalog) VerifiedLocations(_ context.Context, id manifest.ID) ([]activities.Location, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []activities.Location
	for r := range m.verified[id] {
		out = append(out, m.regions[r])
	}
	return out, nil
}

func (m *memCatalog) Region(_ context.Context, id string) (activities.Location, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.regions[id]
	if !ok {
		return l, &store.Error{Kind: store.ErrNotFound, What: "region " + id}
	}
	return l, nil
}

func (m *memCatalog) SetVerified(_ context.Context, id manifest.ID, region string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.verified[id] == nil {
		m.verified[id] = map[string]bool{}
	}
	m.verified[id][region] = true
	return nil
}

func dirStore(t *testing.T, name string) *store.Store {
	b, err := store.NewDir(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	s := store.New(b, store.Options{})
	s.Init(context.Background())
	return s
}

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

	signer, _ := transfer.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	relay := dirStore(t, "central-relay")
	stores := map[string]*store.Store{"region-a": dirStore(t, "a"), "region-b": dirStore(t, "b"), "region-c": dirStore(t, "c")}

	disk := filepath.Join(t.TempDir(), "disk.raw")
	sampledisk.Write(disk, sampledisk.Options{Size: 16 << 20, Seed: 9})
	res, err := imageio.Import(context.Background(), stores["region-a"], disk, imageio.ImportOptions{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(disk)
	want := sha256.Sum256(raw)

	mux := http.NewServeMux()
	(&transfer.Handler{Store: stores["region-a"], Signer: signer}).Routes(mux)
	peerA := httptest.NewServer(mux)
	defer peerA.Close()

	cat := &memCatalog{
		regions: map[string]activities.Location{
			"region-a": {Region: "region-a", Endpoint: peerA.URL, Labels: map[string]string{"site": "north"}},
			"region-b": {Region: "region-b", Labels: map[string]string{"site": "north"}},
			"region-c": {Region: "region-c", Labels: map[string]string{"site": "south"}},
		},
		versions: map[string]manifest.ID{"lab": res.Version.ID},
		verified: map[manifest.ID]map[string]bool{res.Version.ID: {"region-a": true}},
	}
	ws := []interface {
		Start() error
		Stop()
	}{
		workers.NewCentral(c, &activities.Central{Catalog: cat, Signer: signer}),
	}
	for id, s := range stores {
		ws = append(ws, workers.NewRegion(c, &activities.Region{ID: id, Store: s, Relay: relay}))
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
		saveHistory(t, c, run.GetID(), run.GetRunID(), "share-"+target+"-"+out.Path)
		return out
	}
	check := func(target string) {
		t.Helper()
		v, err := stores[target].GetManifest(ctx, res.Version.ID)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), target+".raw")
		if _, err := imageio.Export(ctx, stores[target], v, out, imageio.ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		if sha256.Sum256(b) != want {
			t.Fatalf("%s exports a different disk", target)
		}
		if !cat.verified[res.Version.ID][target] {
			t.Fatalf("%s not recorded as a verified location", target)
		}
	}

	out := share("region-b")
	if out.Path != "peer" || out.Source != "region-a" || out.MovedBytes != res.Stats.StoredBytes {
		t.Fatalf("share to region-b: %+v", out)
	}
	check("region-b")

	// region-a's and region-b's data endpoints become unreachable from region-c.
	cat.mu.Lock()
	for _, r := range []string{"region-a", "region-b"} {
		l := cat.regions[r]
		l.Endpoint = closedPort(t)
		cat.regions[r] = l
	}
	cat.mu.Unlock()
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

// saveHistory writes a workflow's history to workflows/testdata when TMS_SAVE_HISTORIES is set,
// for the replay tests there: go test ./workers -run ShareImage with TMS_SAVE_HISTORIES=1.
func saveHistory(t *testing.T, c client.Client, id, runID, name string) {
	t.Helper()
	if os.Getenv("TMS_SAVE_HISTORIES") == "" {
		return
	}
	h := &historypb.History{}
	it := c.GetWorkflowHistory(context.Background(), id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, ev)
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "workflows", "testdata", name+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
