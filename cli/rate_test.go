package cli

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tms/activities"
	"tms/imageio"
	"tms/internal/pgtest"
	"tms/internal/promtest"
	"tms/internal/sampledisk"
	"tms/server"
	"tms/settings"
	"tms/signing"
)

// TestShareRateAndPushedWANCap shares an image between two region servers under the serving
// region's configured WAN cap (2 MB/s) and the share's own --rate (5 MB/s), and changes the
// serving region's cap with `tms region config set` while the transfer runs, to 4 MB/s, then
// off: the bytes served follow each cap within a second, without a restart, and the share's
// own rate once the region's cap is off. The bytes are counted as the serving region writes them to its connections: its
// metrics count each chunk once it is whole, and under a cap many chunks go at once, each
// slowly.
func TestShareRateAndPushedWANCap(t *testing.T) {
	if testing.Short() {
		t.Skip("a transfer of some seconds")
	}
	srv, c := testTemporal(t)
	ctx := context.Background()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	central, err := server.StartCentral(ctx, server.CentralOptions{DataDir: t.TempDir(), Database: pgtest.StateFor(t), Key: key, Client: c})
	if err != nil {
		t.Fatal(err)
	}
	defer central.Stop()
	var written atomic.Int64
	count := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/chunks/") {
				w = &wireCounter{ResponseWriter: w, n: &written}
			}
			h.ServeHTTP(w, r)
		})
	}
	a, err := server.StartRegion(ctx, server.RegionOptions{ID: "region-a", DataDir: t.TempDir(), Database: pgtest.StateFor(t), Client: c, CentralKey: key.Public(),
		Timezone: "Europe/Berlin", WANRate: 2_000_000, Wrap: count})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(ctx)
	b, err := server.StartRegion(ctx, server.RegionOptions{ID: "region-b", DataDir: t.TempDir(), Database: pgtest.StateFor(t), Client: c, CentralKey: key.Public(),
		Timezone: "Europe/Berlin"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)

	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := sampledisk.Write(disk, sampledisk.Options{Size: 24 << 20, Seed: 5, Random: 1}); err != nil {
		t.Fatal(err)
	}
	imp, err := imageio.Import(ctx, a.Store, disk, imageio.ImportOptions{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	info := activities.VersionInfo{Version: imp.Version.ID.String(), Name: "lab", DiskSize: imp.DiskSize, ChunkSize: imp.Version.Manifest.ChunkSize,
		StoredBytes: imp.Stats.StoredBytes, Created: imp.Version.Manifest.Meta.Created}
	if _, err := (&activities.Central{Catalog: activities.StateCatalog{C: central.Catalog}, Key: key}).RegisterVersion(ctx,
		activities.RegisterVersionInput{Info: info, Tag: "latest", Region: "region-a"}); err != nil {
		t.Fatal(err)
	}
	run := ticking(srv.Address())

	// What people write wrong is refused before anything starts.
	fail(t, run, 2, `--rate: rate "5 MB": no unit per second, say 5MB/s`, "image", "share", "lab", "--to", "region-b", "--rate", "5 MB")
	fail(t, run, 2, `--rate: rate "5Mb/s": Mb is ambiguous`, "image", "share", "lab", "--to", "region-b", "--rate", "5Mb/s")
	fail(t, run, 1, `wan_rate: rate "10 MB": no unit per second, say 10MB/s`, "region", "config", "set", "region-a", "wan_rate", "10 MB")

	// The serving region's bytes out, sampled as the transfer runs.
	type sample struct {
		at    time.Time
		bytes float64
	}
	var mu sync.Mutex
	var samples []sample
	served := func() float64 { return float64(written.Load()) }
	capNow := func() float64 { return promtest.Value(promtest.Scrape(t, a.MetricsURL()), "tms_wan_rate_limit_bytes") }
	if got := capNow(); got != 2_000_000 {
		t.Fatalf("tms_wan_rate_limit_bytes before the push = %v; want the configured 2000000", got)
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			n := served()
			mu.Lock()
			samples = append(samples, sample{time.Now(), n})
			mu.Unlock()
		}
	}()
	servedAt := func(at time.Time) float64 {
		mu.Lock()
		defer mu.Unlock()
		var n float64
		for _, s := range samples {
			if !s.at.After(at) {
				n = s.bytes
			}
		}
		return n
	}

	shared := make(chan string, 1)
	go func() {
		_, out, errs := run("image", "share", "lab", "--to", "region-b", "--rate", "40Mbit/s", "--wait")
		shared <- out + errs
	}()
	// Let 3 MB or so go at the serving region's 2 MB/s, then raise its cap.
	deadline := time.Now().Add(time.Minute)
	for servedAt(time.Now()) < 3_000_000 {
		if time.Now().After(deadline) {
			t.Fatal("the share did not get going")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := must(t, run, "region", "config", "set", "region-a", "wan_rate", "4MB/s")
	pushed := time.Now()
	if !strings.Contains(out, "region region-a applied wan_rate = 4MB/s (was 2MB/s)") {
		t.Fatalf("set wan_rate: %s", out)
	}
	if got := capNow(); got != 4_000_000 {
		t.Fatalf("tms_wan_rate_limit_bytes after the push = %v; want 4000000", got)
	}
	// Two seconds and a half at 4 MB/s, then lift the region's cap: the share's own 5 MB/s
	// is what paces the rest.
	time.Sleep(2600 * time.Millisecond)
	must(t, run, "region", "config", "set", "region-a", "wan_rate", "off")
	lifted := time.Now()
	left := float64(imp.Stats.StoredBytes) - servedAt(lifted)
	var result string
	select {
	case result = <-shared:
	case <-time.After(2 * time.Minute):
		t.Fatal("the share did not end")
	}
	close(stop)
	<-sampled
	if _, err := b.Store.GetManifest(ctx, imp.Version.ID); err != nil {
		t.Fatalf("region-b does not hold the version after the share: %v\n%s", err, result)
	}
	// The metrics count what was served, chunk by chunk.
	if got := promtest.Value(promtest.Scrape(t, a.MetricsURL()), "tms_transfer_bytes_total", "path", "peer", "direction", "out"); got != float64(imp.Stats.StoredBytes) {
		t.Errorf("tms_transfer_bytes_total{peer,out} = %v; the share moved %d", got, imp.Stats.StoredBytes)
	}

	rate := func(from, to time.Time) float64 { return (servedAt(to) - servedAt(from)) / to.Sub(from).Seconds() }
	before := rate(pushed.Add(-1200*time.Millisecond), pushed.Add(-200*time.Millisecond))
	after := rate(pushed.Add(500*time.Millisecond), pushed.Add(2500*time.Millisecond))
	mu.Lock()
	last := samples[len(samples)-1].at
	for i := len(samples) - 1; i > 0 && samples[i-1].bytes == samples[i].bytes; i-- {
		last = samples[i-1].at
	}
	mu.Unlock()
	rest := last.Sub(lifted)
	t.Logf("served at %.2f MB/s before the push, %.2f MB/s after; the last %.1f MB in %s after the cap was lifted",
		before/1e6, after/1e6, left/1e6, rest.Round(time.Millisecond))
	// The serving region's writer paces what it serves, so its writes show its cap closely.
	if before < 1.8e6 || before > 2.2e6 {
		t.Errorf("before the push the region served at %.2f MB/s; want its cap of 2 MB/s", before/1e6)
	}
	if after < 3.8e6 || after > 4.2e6 {
		t.Errorf("after the push the region served at %.2f MB/s; want the pushed 4 MB/s", after/1e6)
	}
	// Without its cap the region serves as fast as the puller reads: at the share's 5 MB/s
	// (40Mbit/s), not in a blink. The puller's reads pace the serving region's writes only
	// as the connections' buffers fill, so the bound is loose.
	if want := time.Duration(left / 5e6 * float64(time.Second)); rest < want*6/10 || rest > want*2 {
		t.Errorf("the last %.1f MB took %s once the region's cap was lifted; at the share's 5 MB/s they take %s", left/1e6, rest, want)
	}

	rc := decode[regionConfig](t, must(t, run, "region", "config", "show", "region-a", "--json"))
	if s := setting(t, rc, settings.KeyWANRate); s.Value != "off" || s.Source != settings.SourcePushed || s.Base != "2MB/s" {
		t.Fatalf("show after the push: %+v", s)
	}
	// A window that holds now replaces wan_rate at once.
	now := time.Now().In(mustZone(t, "Europe/Berlin"))
	from, to := now.Add(-time.Hour).Format("15:04"), now.Add(time.Hour).Format("15:04")
	must(t, run, "region", "config", "set", "region-a", "wan_rate_windows", from+"-"+to+"=1MB/s")
	if got := capNow(); got != 1_000_000 {
		t.Fatalf("tms_wan_rate_limit_bytes with a window that holds now = %v; want 1000000", got)
	}
	if got := a.WAN.Rate(); got != 1_000_000 {
		t.Fatalf("the region's bucket's cap = %d; want the window's 1000000", got)
	}
}

// wireCounter counts the bytes of a response as they are written.
type wireCounter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *wireCounter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

func (w *wireCounter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
