package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/internal/pgtest"
	"tms/internal/promtest"
	"tms/server"
	"tms/signing"
)

// TestMetricsEndpoints starts central's HTTP service and two regions on a real Temporal server
// and scrapes them as Prometheus would: central's series and extra routes on central.listen; a
// region's series on its HTTP service, or only on region.metrics_listen when that is set; and a
// region with 2,000 terminals scrapes within a bounded time.
func TestMetricsEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := temporalClient(t)
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	relay, err := server.OpenDirStore(ctx, filepath.Join(t.TempDir(), "relay"))
	if err != nil {
		t.Fatal(err)
	}
	central, err := server.StartCentral(ctx, server.CentralOptions{DataDir: t.TempDir(), Database: pgtest.StateFor(t), Relay: relay, Key: key, Client: c,
		Listen: "127.0.0.1:0", Routes: []func(*http.ServeMux, *server.Central){func(mux *http.ServeMux, _ *server.Central) {
			mux.HandleFunc("GET /v1/extra", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "extra") })
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer central.Stop()
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	base := "http://" + central.HTTPAddr()
	if code, body := get(base + "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("central /healthz: %d %q", code, body)
	}
	if code, body := get(base + "/v1/extra"); code != http.StatusOK || body != "extra" {
		t.Errorf("central's extra route: %d %q", code, body)
	}
	fams := promtest.Scrape(t, base+"/metrics")
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64 // -2: any value
	}{
		{"tms_tasks", []string{"kind", "deploy", "state", "running"}, 0},
		{"tms_tasks", []string{"kind", "power-off", "state", "completed"}, 0},
		{"tms_task_duration_seconds", []string{"kind", "capture"}, 0},
		{"tms_regions", nil, 0},
		{"tms_relay_store_used_bytes", nil, -2},
		{"tms_relay_store_capacity_bytes", nil, -2},
		{"tms_metrics_source_up", []string{"source", "tasks"}, 1},
	} {
		got := promtest.Value(fams, tc.name, tc.labels...)
		if (tc.want == -2 && got <= 0) || (tc.want != -2 && got != tc.want) {
			t.Errorf("central: %s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}

	apart, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-apart", DataDir: t.TempDir(), Database: pgtest.StateFor(t), CentralKey: key.Public(), Client: c,
		NoRegister: true, MetricsListen: "127.0.0.1:0", HighWater: func() float64 { return 0.9 }})
	if err != nil {
		t.Fatal(err)
	}
	defer apart.Stop(context.Background())
	if code, _ := get(apart.Endpoint() + "/metrics"); code != http.StatusNotFound {
		t.Errorf("with region.metrics_listen, the HTTP service still answers /metrics: %d", code)
	}
	if strings.HasPrefix(apart.MetricsURL(), apart.Endpoint()) {
		t.Fatalf("metrics at %s, on the HTTP service %s", apart.MetricsURL(), apart.Endpoint())
	}
	fams = promtest.Scrape(t, apart.MetricsURL())
	for name, want := range map[string]float64{"tms_store_high_water_ratio": 0.9, "tms_terminals_enrolled": 0, "tms_terminals_online": 0} {
		if got := promtest.Value(fams, name); got != want {
			t.Errorf("region apart: %s = %v, want %v", name, got, want)
		}
	}
	if used, capacity := promtest.Value(fams, "tms_store_used_bytes"), promtest.Value(fams, "tms_store_capacity_bytes"); used <= 0 || capacity < used {
		t.Errorf("region apart: store used %v of %v bytes", used, capacity)
	}

	r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-big", DataDir: t.TempDir(), Database: pgtest.StateFor(t), CentralKey: key.Public(), Client: c, NoRegister: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	const n = 2000
	now := time.Now()
	for i := range n {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)
		if err := r.Inventory.Enroll(ctx, mac, fmt.Sprintf("pc-%04d", i)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := r.Inventory.Seen(ctx, mac, "10.0.0.1", now); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	fams = promtest.Scrape(t, r.Endpoint()+"/metrics")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a scrape of a region with %d terminals took %v", n, took)
	}
	if got := promtest.Value(fams, "tms_terminals_enrolled"); got != n {
		t.Errorf("tms_terminals_enrolled = %v, want %d", got, n)
	}
	if got := promtest.Value(fams, "tms_terminals_online"); got != n/2 {
		t.Errorf("tms_terminals_online = %v, want %d", got, n/2)
	}
	// The region's run-time setting store_high_water, at its default.
	if got := promtest.Value(fams, "tms_store_high_water_ratio"); got != 0.9 {
		t.Errorf("tms_store_high_water_ratio = %v, want the default 0.9", got)
	}
	// The scrape itself counts as a request, by its route.
	fams = promtest.Scrape(t, r.Endpoint()+"/metrics")
	if got := promtest.Value(fams, "tms_http_requests_total", "route", "GET /metrics", "code", "2xx"); got < 1 {
		t.Errorf("requests to /metrics counted: %v", got)
	}
}
