package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/internal/promtest"
	"tms/metrics"
)

// TestNilMetricsCountNothing checks that every method works on a nil *Region and *Central, so
// packages given no metrics keep working.
func TestNilMetricsCountNothing(t *testing.T) {
	var r *metrics.Region
	r.AddBytes(metrics.PathPeer, metrics.In, 10)
	r.ChunkVerified(metrics.PathPeer)
	r.ChunkRefused(metrics.PathAgent, metrics.ReasonHashMismatch)
	r.DHCPRequest(metrics.DHCPAnswered)
	r.TFTPRequest(metrics.TFTPAnswered)
	f := r.Flow(metrics.PathRelay, metrics.Out)
	f.Bytes(1)
	f.Verified()
	f.Refused(metrics.ReasonBadFrame)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	rec := httptest.NewRecorder()
	r.Instrument(h).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusTeapot {
		t.Fatalf("a nil Region's Instrument changed the answer: %d", rec.Code)
	}
	if r.Registry() != nil {
		t.Fatal("a nil Region has a registry")
	}
	var c *metrics.Central
	if c.Registry() != nil {
		t.Fatal("a nil Central has a registry")
	}
	rec = httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("a nil Central's handler answered %d", rec.Code)
	}
}

// TestRegionSeries checks the region's series as Prometheus reads them: every known label
// combination from the start, counts where they were made, values from outside the known sets
// counted as "other", routes by their pattern, and the scrape-time gauges.
func TestRegionSeries(t *testing.T) {
	m := metrics.NewRegion(metrics.RegionSources{
		Terminals: func(context.Context) (metrics.Terminals, error) {
			return metrics.Terminals{Enrolled: 30, Online: 12}, nil
		},
		Store: func(context.Context) (metrics.StoreUsage, error) {
			return metrics.StoreUsage{Used: 5 << 30, Capacity: 100 << 30}, nil
		},
		HighWater: func() float64 { return 0.85 },
		WANRate:   func() int64 { return 20_000_000 },
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /v1/agent/task/chunks/{chunk}", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("frame")) })
	mux.HandleFunc("POST /v1/agent/hello", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusForbidden) })
	srv := httptest.NewServer(m.Instrument(mux))
	defer srv.Close()

	fams := promtest.Scrape(t, srv.URL+"/metrics")
	for _, name := range []string{"tms_transfer_bytes_total", "tms_chunks_verified_total", "tms_chunks_refused_total",
		"tms_dhcp_requests_total", "tms_tftp_requests_total"} {
		if promtest.Value(fams, name) != 0 {
			t.Errorf("%s = %v before anything happened, want 0 (present)", name, promtest.Value(fams, name))
		}
	}
	m.AddBytes(metrics.PathPeer, metrics.In, 1000)
	m.Flow(metrics.PathPeer, metrics.In).Bytes(24)
	m.Flow(metrics.PathAgent, metrics.Out).Bytes(7)
	m.ChunkVerified(metrics.PathPeer)
	m.ChunkRefused(metrics.PathAgent, metrics.ReasonHashMismatch)
	m.ChunkRefused("aa:bb:cc:dd:ee:ff", "pc-07") // made up: counted as other
	m.DHCPRequest(metrics.DHCPNotAdmitted)
	m.TFTPRequest(metrics.TFTPAnswered)
	for _, p := range []string{"/v1/agent/task/chunks/abc", "/v1/agent/task/chunks/def"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Post(srv.URL+"/v1/agent/hello", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get(srv.URL + "/no/such/route/52:54:00:12:34:56")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	fams = promtest.Scrape(t, srv.URL+"/metrics")
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tms_transfer_bytes_total", []string{"path", "peer", "direction", "in"}, 1024},
		{"tms_transfer_bytes_total", []string{"path", "agent", "direction", "out"}, 7},
		{"tms_transfer_bytes_total", []string{"path", "relay"}, 0},
		{"tms_chunks_verified_total", []string{"path", "peer"}, 1},
		{"tms_chunks_refused_total", []string{"path", "agent", "reason", "hash_mismatch"}, 1},
		{"tms_chunks_refused_total", []string{"path", "other", "reason", "other"}, 1},
		{"tms_dhcp_requests_total", []string{"result", "not_admitted"}, 1},
		{"tms_dhcp_requests_total", []string{"result", "answered"}, 0},
		{"tms_tftp_requests_total", []string{"result", "answered"}, 1},
		{"tms_http_requests_total", []string{"route", "GET /v1/agent/task/chunks/{chunk}", "code", "2xx"}, 2},
		{"tms_http_requests_total", []string{"route", "POST /v1/agent/hello", "code", "4xx"}, 1},
		{"tms_http_requests_total", []string{"route", "other", "code", "4xx"}, 1},
		{"tms_terminals_enrolled", nil, 30},
		{"tms_terminals_online", nil, 12},
		{"tms_store_used_bytes", nil, 5 << 30},
		{"tms_store_capacity_bytes", nil, 100 << 30},
		{"tms_store_high_water_ratio", nil, 0.85},
		{"tms_wan_rate_limit_bytes", nil, 20_000_000},
		{"tms_metrics_source_up", []string{"source", "store"}, 1},
	} {
		if got := promtest.Value(fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, lv := range promtest.LabelValues(fams) {
		if strings.Contains(lv, "52:54:00") || strings.Contains(lv, "pc-07") || strings.Contains(lv, "aa:bb") {
			t.Errorf("a label carries what a client sent: %s", lv)
		}
	}
}

// TestRegionSourceFailure checks that a source that fails leaves its series out and says so,
// and that the rest of the scrape stands.
func TestRegionSourceFailure(t *testing.T) {
	m := metrics.NewRegion(metrics.RegionSources{
		Terminals: func(context.Context) (metrics.Terminals, error) {
			return metrics.Terminals{}, errors.New("database is locked")
		},
		Store: func(context.Context) (metrics.StoreUsage, error) { return metrics.StoreUsage{Used: 1}, nil },
	})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := promtest.Scrape(t, srv.URL)
	if v := promtest.Value(fams, "tms_terminals_enrolled"); v != -1 {
		t.Errorf("tms_terminals_enrolled = %v from a failed source", v)
	}
	if v := promtest.Value(fams, "tms_metrics_source_up", "source", "terminals"); v != 0 {
		t.Errorf(`tms_metrics_source_up{source="terminals"} = %v, want 0`, v)
	}
	if v := promtest.Value(fams, "tms_store_used_bytes"); v != 1 {
		t.Errorf("tms_store_used_bytes = %v, want 1", v)
	}
	if v := promtest.Value(fams, "tms_store_capacity_bytes"); v != -1 {
		t.Errorf("tms_store_capacity_bytes = %v for a store of unknown capacity, want absent", v)
	}
}

// fakeTasks is a visibility store: counts by kind, and closed tasks.
type fakeTasks struct {
	mu     sync.Mutex
	counts map[string][]metrics.TaskCount
	closed []metrics.ClosedTask
	asked  int
	since  []time.Time
}

func (f *fakeTasks) CountTasks(_ context.Context, kind string) ([]metrics.TaskCount, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	return f.counts[kind], nil
}

func (f *fakeTasks) ClosedTasks(_ context.Context, since time.Time, limit int) ([]metrics.ClosedTask, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since = append(f.since, since)
	var out []metrics.ClosedTask
	for _, c := range f.closed {
		if !c.Close.Before(since) && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}

// TestCentralTasksAndDurations checks central's task gauge (every state present, cached between
// scrapes) and the durations histogram (each closed run observed once, though visibility shows
// it again).
func TestCentralTasksAndDurations(t *testing.T) {
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	f := &fakeTasks{counts: map[string][]metrics.TaskCount{
		"deploy": {{State: "running", Count: 2}, {State: "completed", Count: 5}},
	}}
	m := metrics.NewCentral(metrics.CentralSources{Tasks: f, Kinds: []string{"capture", "deploy"}, Now: clock,
		Regions: func(context.Context) (int64, error) { return 3, nil },
		Relay: func(context.Context) (metrics.StoreUsage, error) {
			return metrics.StoreUsage{Used: 42, Capacity: 1000}, nil
		}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	fams := promtest.Scrape(t, srv.URL)
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"kind", "deploy", "state", "running"}, 2},
		{[]string{"kind", "deploy", "state", "completed"}, 5},
		{[]string{"kind", "deploy", "state", "failed"}, 0},
		{[]string{"kind", "capture", "state", "running"}, 0},
	} {
		if got := promtest.Value(fams, "tms_tasks", tc.labels...); got != tc.want {
			t.Errorf("tms_tasks%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	for name, want := range map[string]float64{"tms_regions": 3, "tms_relay_store_used_bytes": 42, "tms_relay_store_capacity_bytes": 1000,
		"tms_task_duration_seconds": 0} {
		if got := promtest.Value(fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	askedNow := func() int { f.mu.Lock(); defer f.mu.Unlock(); return f.asked }
	asked := askedNow()

	// Within the cache time: visibility is not asked again.
	f.mu.Lock()
	f.counts["deploy"] = []metrics.TaskCount{{State: "completed", Count: 7}}
	f.closed = []metrics.ClosedTask{
		{RunID: "r1", Kind: "deploy", Start: now.Add(-90 * time.Second), Close: now.Add(time.Second)},
		{RunID: "r2", Kind: "capture", Start: now.Add(-10 * time.Second), Close: now.Add(2 * time.Second)},
	}
	f.mu.Unlock()
	advance(5 * time.Second)
	fams = promtest.Scrape(t, srv.URL)
	if askedNow() != asked || promtest.Value(fams, "tms_tasks", "kind", "deploy", "state", "completed") != 5 {
		t.Fatalf("asked visibility within the cache time (%d, then %d)", asked, askedNow())
	}
	advance(15 * time.Second)
	fams = promtest.Scrape(t, srv.URL)
	if got := promtest.Value(fams, "tms_tasks", "kind", "deploy", "state", "completed"); got != 7 {
		t.Errorf("after the cache time: completed deploys = %v, want 7", got)
	}
	if got := promtest.Value(fams, "tms_tasks", "kind", "deploy", "state", "running"); got != 0 {
		t.Errorf("after the cache time: running deploys = %v, want 0", got)
	}
	if got := promtest.Value(fams, "tms_task_duration_seconds", "kind", "deploy"); got != 1 {
		t.Errorf("deploy durations observed: %v, want 1", got)
	}
	// The same runs, shown again by visibility with a new one: only the new one counts.
	f.mu.Lock()
	f.closed = append(f.closed, metrics.ClosedTask{RunID: "r3", Kind: "deploy", Start: now, Close: now.Add(20 * time.Second)})
	f.mu.Unlock()
	advance(20 * time.Second)
	fams = promtest.Scrape(t, srv.URL)
	if got := promtest.Value(fams, "tms_task_duration_seconds", "kind", "deploy"); got != 2 {
		t.Errorf("deploy durations observed: %v, want 2 (r1 once, r3)", got)
	}
	if got := promtest.Value(fams, "tms_task_duration_seconds", "kind", "capture"); got != 1 {
		t.Errorf("capture durations observed: %v, want 1", got)
	}
	fam := fams["tms_task_duration_seconds"]
	for _, mm := range fam.GetMetric() {
		if mm.GetLabel()[0].GetValue() == "deploy" && mm.GetHistogram().GetSampleSum() != 91+20 {
			t.Errorf("deploy durations sum to %v s, want 111", mm.GetHistogram().GetSampleSum())
		}
	}
	// Each listing looked back no further than the slack before the newest close it had seen.
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.since[len(f.since)-1]; !s.After(time.Date(2026, 12, 2, 8, 58, 0, 0, time.UTC)) {
		t.Errorf("the last listing started at %v: it does not move on", s)
	}
}

// TestCentralPlanRegions checks tms_plan_regions: every state of every plan present.
func TestCentralPlanRegions(t *testing.T) {
	m := metrics.NewCentral(metrics.CentralSources{Plans: func(context.Context) ([]metrics.PlanRegions, error) {
		return []metrics.PlanRegions{{Plan: "exam-week", State: "ready", Count: 2}, {Plan: "exam-week", State: "not-ready", Count: 1},
			{Plan: "nightly", State: "pending", Count: 4}}, nil
	}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := promtest.Scrape(t, srv.URL)
	for _, tc := range []struct {
		plan, state string
		want        float64
	}{{"exam-week", "ready", 2}, {"exam-week", "not-ready", 1}, {"exam-week", "pending", 0}, {"nightly", "pending", 4}, {"nightly", "not-ready", 0}} {
		if got := promtest.Value(fams, "tms_plan_regions", "plan", tc.plan, "state", tc.state); got != tc.want {
			t.Errorf("tms_plan_regions{plan=%s,state=%s} = %v, want %v", tc.plan, tc.state, got, tc.want)
		}
	}
}
