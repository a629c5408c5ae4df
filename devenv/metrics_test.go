package devenv_test

import (
	"strings"
	"testing"
	"time"

	"tms/internal/promtest"
	"tms/workflows"
)

// TestMetricsMoveWithCaptureAndDeploy scrapes central's and each region's /metrics as
// Prometheus would, before and after a capture in region-a and a deploy to region-b (a peer
// pull): the bytes moved by agent and peer, the chunks checked, the requests, the store's
// bytes and central's task counts and durations all move, and no label carries a MAC or a
// terminal's name.
func TestMetricsMoveWithCaptureAndDeploy(t *testing.T) {
	env := start(t, t.TempDir(), "region-a", "region-b")
	defer env.Stop()
	centralURL := "http://" + env.Central.HTTPAddr() + "/metrics"
	aURL, bURL := env.Regions["region-a"].MetricsURL(), env.Regions["region-b"].MetricsURL()

	central := promtest.Scrape(t, centralURL)
	a0, b0 := promtest.Scrape(t, aURL), promtest.Scrape(t, bURL)
	for _, name := range []string{"tms_tasks", "tms_task_duration_seconds", "tms_regions", "tms_relay_store_used_bytes",
		"tms_relay_store_capacity_bytes"} {
		if _, ok := central[name]; !ok {
			t.Errorf("central's scrape has no %s", name)
		}
	}
	for _, name := range []string{"tms_transfer_bytes_total", "tms_chunks_verified_total", "tms_chunks_refused_total",
		"tms_terminals_enrolled", "tms_terminals_online", "tms_store_used_bytes", "tms_store_capacity_bytes",
		"tms_dhcp_requests_total", "tms_tftp_requests_total", "tms_http_requests_total"} {
		if _, ok := a0[name]; !ok {
			t.Errorf("region-a's scrape has no %s", name)
		}
	}
	if got := promtest.Value(central, "tms_regions"); got != 2 {
		t.Errorf("tms_regions = %v, want 2", got)
	}
	if got := promtest.Value(b0, "tms_terminals_enrolled"); got != 3 {
		t.Errorf("region-b: tms_terminals_enrolled = %v, want 3", got)
	}

	capture(t, env, "region-a", "a-pc1", "classroom")
	res := deploy(t, env, workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "classroom"})
	if res.Share.Path != "peer" || res.Failed != 0 {
		t.Fatalf("deploy: %+v", res)
	}

	a1, b1 := promtest.Scrape(t, aURL), promtest.Scrape(t, bURL)
	grew := func(name string, before, after promtest.Families, where string, labels ...string) {
		t.Helper()
		if x, y := promtest.Value(before, name, labels...), promtest.Value(after, name, labels...); !(y > x && x >= 0) {
			t.Errorf("%s: %s%v went from %v to %v, want it to grow", where, name, labels, x, y)
		}
	}
	grew("tms_transfer_bytes_total", a0, a1, "region-a", "path", "agent", "direction", "in")
	grew("tms_chunks_verified_total", a0, a1, "region-a", "path", "agent")
	grew("tms_transfer_bytes_total", a0, a1, "region-a", "path", "peer", "direction", "out")
	grew("tms_transfer_bytes_total", b0, b1, "region-b", "path", "peer", "direction", "in")
	grew("tms_chunks_verified_total", b0, b1, "region-b", "path", "peer")
	grew("tms_transfer_bytes_total", b0, b1, "region-b", "path", "agent", "direction", "out")
	// Request series appear with a route's first request.
	// The group's terminals write the same version at once: a swarm, whose members get the
	// region's chunks one by one (a lone terminal would ask for frames many at a time).
	if got := promtest.Value(b1, "tms_http_requests_total", "route", "POST /v1/agent/task/swarm", "code", "2xx"); got < 1 {
		t.Errorf("region-b: agents' swarm calls = %v", got)
	}
	frames := promtest.Value(b1, "tms_http_requests_total", "route", "POST /v1/agent/task/frames", "code", "2xx")
	single := promtest.Value(b1, "tms_http_requests_total", "route", "GET /v1/agent/task/chunks/{chunk}", "code", "2xx")
	if max(frames, 0)+max(single, 0) < 1 {
		t.Errorf("region-b: agents' chunk requests: %v for frames, %v for one chunk", frames, single)
	}
	if got := promtest.Value(a1, "tms_http_requests_total", "route", "GET /v1/versions/{version}/chunks/{chunk}", "code", "2xx"); got < 1 {
		t.Errorf("region-a: peers' chunk requests = %v", got)
	}
	if got := promtest.Value(b1, "tms_chunks_refused_total"); got != 0 {
		t.Errorf("region-b refused %v chunks of a clean deploy", got)
	}
	// Peer bytes out of region-a are the bytes into region-b.
	if out, in := promtest.Value(a1, "tms_transfer_bytes_total", "path", "peer", "direction", "out"),
		promtest.Value(b1, "tms_transfer_bytes_total", "path", "peer", "direction", "in"); out != in {
		t.Errorf("region-a sent %v peer bytes, region-b received %v", out, in)
	}
	// The store's count follows a new version within seconds (its cache is marked stale).
	deadline := time.Now().Add(15 * time.Second)
	for promtest.Value(b1, "tms_store_used_bytes") <= promtest.Value(b0, "tms_store_used_bytes") && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		b1 = promtest.Scrape(t, bURL)
	}
	grew("tms_store_used_bytes", b0, b1, "region-b")
	if got := promtest.Value(b1, "tms_terminals_online"); got < 1 || got > 3 {
		t.Errorf("region-b: tms_terminals_online = %v, want 1 to 3", got)
	}

	// Central's task counts are cached for 15 s: within 30 s the capture and deploy show, with
	// their durations.
	deadline = time.Now().Add(40 * time.Second)
	for {
		central = promtest.Scrape(t, centralURL)
		if promtest.Value(central, "tms_tasks", "kind", "deploy", "state", "completed") >= 1 &&
			promtest.Value(central, "tms_task_duration_seconds", "kind", "deploy") >= 1 &&
			promtest.Value(central, "tms_task_duration_seconds", "kind", "capture") >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	for _, tc := range []struct {
		name   string
		labels []string
	}{
		{"tms_tasks", []string{"kind", "deploy", "state", "completed"}},
		{"tms_tasks", []string{"kind", "capture", "state", "completed"}},
		{"tms_task_duration_seconds", []string{"kind", "deploy"}},
		{"tms_task_duration_seconds", []string{"kind", "capture"}},
	} {
		if got := promtest.Value(central, tc.name, tc.labels...); got < 1 {
			t.Errorf("central: %s%v = %v, want at least 1", tc.name, tc.labels, got)
		}
	}

	for _, fams := range []promtest.Families{central, a1, b1} {
		for _, lv := range promtest.LabelValues(fams) {
			for _, term := range env.Terminals {
				if strings.Contains(lv, term.MAC) || strings.Contains(lv, term.Name) {
					t.Errorf("a label names a terminal: %s", lv)
				}
			}
		}
	}
}
