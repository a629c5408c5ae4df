package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/internal/temporaltest"
	"tms/server"
	"tms/settings"
	"tms/signing"
	"tms/workers"
)

// ticking is a runner whose commands run one second apart (a push's task id carries the
// second it was asked in).
func ticking(addr string) tmsRun {
	var mu sync.Mutex
	now := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	return func(args ...string) (int, string, string) {
		mu.Lock()
		now = now.Add(time.Second)
		at := now
		mu.Unlock()
		var out, errb bytes.Buffer
		off := false
		a := &App{Stdout: &out, Stderr: &errb, Progress: &off, Env: func(string) (string, bool) { return "", false },
			Now: func() time.Time { return at }}
		code := a.Run(context.Background(), append([]string{"--temporal", addr}, args...))
		return code, out.String(), errb.String()
	}
}

// countingWaker stands in for Wake-on-LAN: it counts the magic packets and wakes nothing.
type countingWaker struct {
	mu sync.Mutex
	n  int
}

func (w *countingWaker) Wake(context.Context, string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	return nil
}

func (w *countingWaker) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func setting(t *testing.T, rc regionConfig, key string) settingRow {
	t.Helper()
	for _, s := range rc.Settings {
		if s.Key == key {
			return s
		}
	}
	t.Fatalf("show lists no %s: %+v", key, rc)
	return settingRow{}
}

// TestRegionConfigSetAndShow pushes settings to a running region server and checks they take
// effect without a restart, that a bad value changes nothing, that a push to a stopped region
// is pending until it comes back, and that a restart keeps the pushes.
func TestRegionConfigSetAndShow(t *testing.T) {
	srv, c := testTemporal(t)
	ctx := context.Background()
	sc, _ := testState(t)
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}))
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := pgtest.StateFor(t) // the restarted region opens the same state
	waker := &countingWaker{}
	start := func() *server.Region {
		t.Helper()
		r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-1", DataDir: dir, Database: db, Client: c, CentralKey: key.Public(),
			Timezone: "Europe/Berlin", Listen: "127.0.0.1:0", Waker: waker})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	region := start()
	stopped := false
	defer func() {
		if !stopped {
			region.Stop(ctx)
		}
	}()
	run := ticking(srv.Address())

	// Before any push: the configuration's zone, the defaults.
	rc := decode[regionConfig](t, must(t, run, "region", "config", "show", "lab-1", "--json"))
	if !rc.Online || len(rc.Settings) != len(settings.Keys()) {
		t.Fatalf("show: %+v", rc)
	}
	if s := setting(t, rc, settings.KeyTimezone); s.Value != "Europe/Berlin" || s.Source != settings.SourceConfig {
		t.Fatalf("timezone before a push: %+v", s)
	}
	if s := setting(t, rc, settings.KeyStoreHighWater); s.Value != "0.9" || s.Source != settings.SourceDefault {
		t.Fatalf("store_high_water before a push: %+v", s)
	}

	// A push takes effect at once: the zone central's catalog (and so tms region ls and --at)
	// uses, the wake timeout power-on waits, the high-water mark the store reads.
	out := must(t, run, "region", "config", "set", "lab-1", "timezone", "Asia/Tokyo")
	if !strings.Contains(out, "region lab-1 applied timezone = Asia/Tokyo (was Europe/Berlin)") {
		t.Fatalf("set timezone: %s", out)
	}
	rows := decode[[]regionRow](t, must(t, run, "region", "ls", "--json"))
	if len(rows) != 1 || rows[0].Timezone != "Asia/Tokyo" {
		t.Fatalf("region ls after the push: %+v", rows)
	}
	res := decode[configResult](t, must(t, run, "region", "config", "set", "lab-1", "boot.wake_timeout", "10s", "--json"))
	if res.State != "applied" || res.Value != "10s" || res.Previous != "3m0s" {
		t.Fatalf("set wake timeout: %+v", res)
	}
	if got := region.Settings.WakeTimeout(); got != 10*time.Second {
		t.Fatalf("the running region's wake timeout is %s after the push", got)
	}
	// A power-on of a terminal that does not come gives up after the pushed 10 s, not the
	// 3 minutes the region started with.
	must(t, run, "terminal", "enroll", "--region", "lab-1", "52:54:00:00:0c:01", "pc1")
	began := time.Now()
	code, stdout, _ := run("power", "on", "--region", "lab-1", "--terminal", "pc1", "--wait", "--json")
	waited := time.Since(began)
	pr := decode[powerResult](t, stdout)
	if code != 1 || len(pr.Result.Terminals) != 1 || pr.Result.Terminals[0].Outcome != activities.PowerNoAnswer {
		t.Fatalf("power on of a terminal that does not come: exit %d, %+v", code, pr)
	}
	if waited < 10*time.Second || waited > 90*time.Second || waker.count() == 0 {
		t.Fatalf("power on waited %s (want the pushed 10s) and sent %d magic packets", waited, waker.count())
	}
	must(t, run, "region", "config", "set", "lab-1", "store_high_water", "0.85")
	if got := region.StoreHighWater(); got != 0.85 {
		t.Fatalf("the running region's high-water mark is %v after the push", got)
	}
	rc = decode[regionConfig](t, must(t, run, "region", "config", "show", "lab-1", "--json"))
	if s := setting(t, rc, settings.KeyWakeTimeout); s.Value != "10s" || s.Source != settings.SourcePushed || s.Base != "3m0s" || s.Task == "" {
		t.Fatalf("show after the push: %+v", s)
	}

	// A value that does not validate is refused before anything starts.
	fail(t, run, 1, `refused, nothing changed: store_high_water: "2" is not a fraction between 0.5 and 0.99`,
		"region", "config", "set", "lab-1", "store_high_water", "2")
	fail(t, run, 1, `"boot.dhcp" is not a run-time setting`, "region", "config", "set", "lab-1", "boot.dhcp", "full")
	if got := region.StoreHighWater(); got != 0.85 {
		t.Fatalf("a refused push changed the high-water mark to %v", got)
	}
	tasks := decode[[]taskRow](t, must(t, run, "task", "ls", "--all", "--kind", "config", "--json"))
	if len(tasks) != 3 {
		t.Fatalf("config tasks: %d, want the 3 pushes only: %+v", len(tasks), tasks)
	}
	text := must(t, run, "region", "config", "show", "lab-1")
	if !strings.Contains(text, "boot.wake_timeout") || !strings.Contains(text, "pushed") || !strings.Contains(text, "how long a power-on waits") {
		t.Fatalf("show's text:\n%s", text)
	}

	// The region is stopped: a push is pending, and show says so with central's record.
	if err := region.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	out = must(t, run, "region", "config", "set", "lab-1", "boot.claim_quiet", "10s", "--wait", "2s")
	if !strings.Contains(out, "the change of boot.claim_quiet to 10s is pending and applies when the region returns") {
		t.Fatalf("set to a stopped region: %s", out)
	}
	// A second change of the key replaces the pending one, so the region ends with the last.
	var superseded string
	eventually(t, "the first push to be listed pending", func() bool {
		rc = decode[regionConfig](t, must(t, run, "region", "config", "show", "lab-1", "--json", "--wait", "1s"))
		if p := setting(t, rc, settings.KeyClaimQuiet).Pending; len(p) == 1 {
			superseded = p[0].Task
		}
		return superseded != ""
	})
	var errs string
	code, out, errs = run("region", "config", "set", "lab-1", "boot.claim_quiet", "5s", "--wait", "2s")
	if code != 0 || !strings.Contains(errs, "canceled the pending change of boot.claim_quiet to 10s (task "+superseded+")") ||
		!strings.Contains(out, "is pending") {
		t.Fatalf("a second push while the first is pending: exit %d\n%s\n%s", code, out, errs)
	}
	eventually(t, "the replaced push to be canceled", func() bool {
		return decode[taskDetail](t, must(t, run, "task", "show", superseded, "--json")).Status == "Canceled"
	})
	var pendingTask string
	eventually(t, "show to list the pending push", func() bool {
		rc = decode[regionConfig](t, must(t, run, "region", "config", "show", "lab-1", "--json", "--wait", "2s"))
		p := setting(t, rc, settings.KeyClaimQuiet).Pending
		if len(p) == 1 {
			pendingTask = p[0].Task
		}
		return len(p) == 1 && p[0].Value == "5s"
	})
	if rc.Online || rc.Error == "" {
		t.Fatalf("a stopped region shown online: %+v", rc)
	}
	if s := setting(t, rc, settings.KeyTimezone); s.Value != "Asia/Tokyo" || s.Source != settings.SourcePushed {
		t.Fatalf("central's record of the zone while the region is offline: %+v", s)
	}
	if s := setting(t, rc, settings.KeyClaimQuiet); s.Source != "unknown" {
		t.Fatalf("claim quiet while offline, never applied: %+v", s)
	}

	// Back: the pending push applies, and the earlier pushes survived the restart.
	region = start()
	stopped = false
	eventually(t, "the pending push to apply", func() bool {
		rc = decode[regionConfig](t, must(t, run, "region", "config", "show", "lab-1", "--json"))
		s := setting(t, rc, settings.KeyClaimQuiet)
		return rc.Online && s.Value == "5s" && len(s.Pending) == 0
	})
	if got := region.Settings.ClaimQuiet(); got != 5*time.Second {
		t.Fatalf("claim quiet after the pending push: %s", got)
	}
	if region.Settings.WakeTimeout() != 10*time.Second || region.Settings.Timezone() != "Asia/Tokyo" || region.StoreHighWater() != 0.85 {
		t.Fatalf("after a restart: %+v", region.Settings.Values())
	}
	rows = decode[[]regionRow](t, must(t, run, "region", "ls", "--json"))
	if rows[0].Timezone != "Asia/Tokyo" {
		t.Fatalf("the restarted region reported zone %s, not its pushed one", rows[0].Timezone)
	}
	temporaltest.SaveHistory(t, c, pendingTask, "", "ConfigureRegion-pending")

	// A region whose server runs without run-time settings (an older tms) refuses a push: the
	// task fails with its reason, and show falls back to central's record.
	if err := sc.UpsertRegion(ctx, activities.RegionInfo{ID: "old-1"}); err != nil {
		t.Fatal(err)
	}
	_, inv := testState(t)
	startWorkers(t, workers.NewRegion(c, &activities.Region{ID: "old-1", Inventory: inv}))
	fail(t, run, 1, "failed (task config/old-1/timezone/", "region", "config", "set", "old-1", "timezone", "UTC")
	fail(t, run, 1, "region old-1 runs without run-time settings", "region", "config", "set", "old-1", "timezone", "UTC")
	if text := must(t, run, "region", "config", "show", "old-1"); !strings.Contains(text, "region old-1 could not say its settings (region old-1 runs without run-time settings") {
		t.Fatalf("show of a region without settings:\n%s", text)
	}
}
