package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"tms/internal/promtest"
	"tms/metrics"
)

// FuzzInstrumentLabels sends requests of any method and path through Instrument: whatever a
// client asks, the route label is one of the mux's own patterns or "other", and the code label
// a status class, so no request adds a series of its own making.
func FuzzInstrumentLabels(f *testing.F) {
	for _, s := range [][2]string{
		{"GET", "/v1/agent/task/chunks/abc"},
		{"POST", "/v1/agent/hello"},
		{"GET", "/v1/agent/task/chunks/52:54:00:12:34:56"},
		{"DELETE", "/metrics"},
		{"GET", "/%2e%2e/etc/passwd"},
		{"BREW", "/coffee?mac=52:54:00:12:34:56"},
	} {
		f.Add(s[0], s[1])
	}
	patterns := []string{"GET /v1/agent/task/chunks/{chunk}", "POST /v1/agent/hello", "GET /metrics"}
	m := metrics.NewRegion(metrics.RegionSources{})
	mux := http.NewServeMux()
	for _, p := range patterns {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	}
	h := m.Instrument(mux)
	f.Fuzz(func(t *testing.T, method, path string) {
		r, err := http.NewRequest(method, "http://region"+path, nil)
		if err != nil {
			return
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		fams := promtest.Gather(t, m.Registry())
		for _, mm := range fams["tms_http_requests_total"].GetMetric() {
			for _, l := range mm.GetLabel() {
				switch l.GetName() {
				case "route":
					if l.GetValue() != "other" && !slices.Contains(patterns, l.GetValue()) {
						t.Fatalf("route label %q from %s %q", l.GetValue(), method, path)
					}
				case "code":
					if !slices.Contains([]string{"2xx", "3xx", "4xx", "5xx"}, l.GetValue()) {
						t.Fatalf("code label %q", l.GetValue())
					}
				}
			}
		}
	})
}
