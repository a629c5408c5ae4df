package cli

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/internal/storetest"
	"tms/signing"
	"tms/workers"
)

// adminSetup starts an embedded Temporal server, central's worker over a catalog that knows
// region-a (served by a worker over a directory store holding image lab) and region-b (whose
// worker is not running), and returns a runner pointed at the server.
func adminSetup(t *testing.T) (tmsRun, string) {
	t.Helper()
	run, version, _ := adminSetupAt(t)
	return run, version
}

// adminSetupAt is adminSetup that also returns the server's address.
func adminSetupAt(t *testing.T) (tmsRun, string, string) {
	t.Helper()
	srv, c := testTemporal(t)
	ctx := context.Background()
	sc, inv := testState(t,
		activities.RegionInfo{ID: "region-a", Endpoint: "http://127.0.0.1:8081", Labels: map[string]string{"site": "north"}, Timezone: "Europe/Berlin"},
		activities.RegionInfo{ID: "region-b", Labels: map[string]string{"site": "south"}})
	s, _ := storetest.Dir(t)
	imp := storetest.Import(t, s, storetest.SampleDisk(t, 8<<20, 3), "lab")

	// Central's key signed lab, so that region-a deploys it.
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sig := key.SignVersion(imp.Version.ID)
	if err := s.PutSignature(ctx, imp.Version.ID, sig); err != nil {
		t.Fatal(err)
	}
	m := imp.Version.Manifest
	if err := sc.RecordVersion(ctx, activities.VersionInfo{Version: imp.Version.ID.String(), Name: "lab", Created: m.Meta.Created,
		DiskSize: m.DiskSize, ChunkSize: m.ChunkSize, StoredBytes: imp.Stats.StoredBytes}, sig, "latest"); err != nil {
		t.Fatal(err)
	}
	if err := sc.SetVerified(ctx, imp.Version.ID, "region-a"); err != nil {
		t.Fatal(err)
	}

	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "region-a", Store: s, Inventory: inv, CentralKey: key.Public()}))
	return runnerAt(srv.Address()), imp.Version.ID.String(), srv.Address()
}

func fail(t *testing.T, run tmsRun, code int, want string, args ...string) {
	t.Helper()
	got, out, errs := run(args...)
	if got != code || !strings.Contains(errs, want) {
		t.Fatalf("tms %s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stderr to hold %q", strings.Join(args, " "), got, code, out, errs, want)
	}
	// One line, the root cause, without Temporal's wrapping.
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	last := lines[len(lines)-1]
	if code == 1 && (!strings.HasPrefix(last, "tms: ") || !strings.Contains(last, want) || strings.Contains(last, "workflow execution error") || strings.Contains(last, "activity error")) {
		t.Fatalf("tms %s: error is not one plain line:\n%s", strings.Join(args, " "), errs)
	}
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	return v
}

// eventually retries check for up to 15 seconds (visibility and cancellation are asynchronous).
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !check(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAdminCommandsOverTemporal(t *testing.T) {
	run, version := adminSetup(t)

	regions := decode[[]regionRow](t, must(t, run, "region", "ls", "--json"))
	if len(regions) != 2 || regions[0].ID != "region-a" || regions[0].Labels["site"] != "north" || regions[0].Endpoint != "http://127.0.0.1:8081" ||
		regions[0].Timezone != "Europe/Berlin" || regions[1].Timezone != "" {
		t.Fatalf("region ls: %+v", regions)
	}
	if text := must(t, run, "region", "ls"); !strings.Contains(text, "region-b") || !strings.Contains(text, "site=south") || !strings.Contains(text, "Europe/Berlin") {
		t.Fatalf("region ls text:\n%s", text)
	}

	images := decode[[]catalogRow](t, must(t, run, "image", "ls", "--json"))
	if len(images) != 1 || images[0].Name != "lab" || images[0].Version != version || !slices.Equal(images[0].Tags, []string{"latest"}) ||
		!slices.Equal(images[0].Regions, []string{"region-a"}) {
		t.Fatalf("image ls from the catalog: %+v", images)
	}
	if text := must(t, run, "image", "ls"); !strings.Contains(text, version[:12]) || !strings.Contains(text, "region-a") {
		t.Fatalf("image ls text:\n%s", text)
	}

	// Sharing an image where it already is ends at once: --wait follows it to its result, and
	// a share that fails exits with the reason central gave.
	if out := must(t, run, "image", "share", "lab", "--to", "region-a", "--wait"); !strings.Contains(out, "completed: version "+version[:12]+" was already there") {
		t.Fatalf("image share --wait: %s", out)
	}
	fail(t, run, 1, "failed: image nope is not in the catalog", "image", "share", "nope", "--to", "region-a", "--wait")
	d := decode[taskDetail](t, must(t, run, "task", "show", "share/nope/region-a"+testStamp, "--json"))
	if d.Status != "Failed" || d.Failure != "image nope is not in the catalog" || d.Type != "ShareImage" || d.Close == nil {
		t.Fatalf("task show of the failed share: %+v", d)
	}

	must(t, run, "terminal", "enroll", "--region", "region-a", "52:54:00:00:00:01", "pc1")
	must(t, run, "terminal", "enroll", "--region", "region-a", "52:54:00:00:00:02", "pc2")
	fail(t, run, 1, "pc1", "terminal", "enroll", "--region", "region-a", "52:54:00:00:00:03", "pc1")
	terms := decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", "region-a", "--json"))
	if len(terms) != 2 || terms[0].Name != "pc1" || terms[0].MAC != "52:54:00:00:00:01" || !terms[0].Enrolled || terms[0].BootAction != "local" {
		t.Fatalf("terminal ls: %+v", terms)
	}

	must(t, run, "group", "create", "--region", "region-a", "room1")
	must(t, run, "group", "add", "--region", "region-a", "room1", "pc1", "pc2")
	fail(t, run, 1, "region region-a has no terminal pc9", "group", "add", "--region", "region-a", "room1", "pc9")
	groups := decode[[]groupRow](t, must(t, run, "group", "ls", "--region", "region-a", "--json"))
	if len(groups) != 1 || groups[0].Name != "room1" || !slices.Equal(groups[0].Members, []string{"pc1", "pc2"}) {
		t.Fatalf("group ls: %+v", groups)
	}

	fail(t, run, 1, "unknown region nowhere; known: region-a, region-b", "terminal", "ls", "--region", "nowhere")
	fail(t, run, 1, "unknown region nowhere; known: region-a, region-b", "image", "capture", "--region", "nowhere", "--terminal", "pc1", "lab")
	fail(t, run, 1, "region region-b's worker is not running (no workflow service/region/region-b)", "group", "ls", "--region", "region-b", "--admin-timeout", "2s")
	fail(t, run, 2, "--region is required", "terminal", "ls")
	fail(t, run, 2, "--terminal is required", "image", "capture", "--region", "region-a", "lab")
	fail(t, run, 2, "not both", "deploy", "--region", "region-a", "--group", "room1", "--terminal", "pc1", "lab")
	fail(t, run, 2, "--group or --terminal is required", "deploy", "--region", "region-a", "lab")

	// A capture waits for pc1's agent, which never comes here: it shows as a running task
	// until it is canceled, and pc1 boots from its own disk again.
	out := must(t, run, "image", "capture", "--region", "region-a", "--terminal", "pc1", "lab2")
	id := "capture/region-a/pc1/lab2" + testStamp
	if !strings.Contains(out, "task "+id) || !strings.Contains(out, "tms task show "+id) || !strings.Contains(out, "/workflows/capture%2Fregion-a%2Fpc1%2Flab2") {
		t.Fatalf("capture: %s", out)
	}
	fail(t, run, 1, "already running as task "+id, "image", "capture", "--region", "region-a", "--terminal", "pc1", "lab2")
	eventually(t, "the capture to wait for the agent", func() bool {
		d := decode[taskDetail](t, must(t, run, "task", "show", id, "--json"))
		return d.Status == "Running" && len(d.Pending) == 1 && d.Pending[0].Type == "WaitForAgent" && strings.Contains(string(d.Progress), `"waiting"`)
	})
	terms = decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", "region-a", "--json"))
	if terms[0].BootAction != "capture" || terms[0].Task != id {
		t.Fatalf("pc1 during the capture: %+v", terms[0])
	}
	if text := must(t, run, "task", "show", id); !strings.Contains(text, "capture of pc1: waiting") || !strings.Contains(text, "WaitForAgent") {
		t.Fatalf("task show text:\n%s", text)
	}
	inList := func(rows []taskRow) *taskRow {
		for i := range rows {
			if rows[i].ID == id {
				return &rows[i]
			}
		}
		return nil
	}
	eventually(t, "the capture to be listed", func() bool {
		r := inList(decode[[]taskRow](t, must(t, run, "task", "ls", "--region", "region-a", "--json")))
		return r != nil && r.Type == "CaptureImage" && r.Kind == "capture" && r.State == "running"
	})
	if r := inList(decode[[]taskRow](t, must(t, run, "task", "ls", "--region", "region-b", "--json"))); r != nil {
		t.Fatalf("region-b lists region-a's capture: %+v", r)
	}

	if out := must(t, run, "task", "cancel", id); !strings.Contains(out, "cancel requested") {
		t.Fatalf("task cancel: %s", out)
	}
	eventually(t, "the capture to be canceled", func() bool {
		return decode[taskDetail](t, must(t, run, "task", "show", id, "--json")).Status == "Canceled"
	})
	terms = decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", "region-a", "--json"))
	if terms[0].BootAction != "local" {
		t.Fatalf("pc1 after the cancel: %+v", terms[0])
	}
	if text := must(t, run, "task", "show", id); !regexp.MustCompile(`State: +canceled`).MatchString(text) || !strings.Contains(text, "Failure:") {
		t.Fatalf("task show of the canceled capture:\n%s", text)
	}
	eventually(t, "the canceled capture to leave the open list", func() bool {
		return inList(decode[[]taskRow](t, must(t, run, "task", "ls", "--json"))) == nil &&
			inList(decode[[]taskRow](t, must(t, run, "task", "ls", "--all", "--json"))) != nil
	})
	fail(t, run, 1, "already ended", "task", "cancel", id)
	fail(t, run, 1, "no task capture/nope", "task", "show", "capture/nope")
}
