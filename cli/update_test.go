package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"tms/activities"
	"tms/devenv"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/workflows"
)

// TestUpdateCommand runs the update by the version chain through the CLI forms against `tms dev`'s
// environment (embedded Temporal, two regions, simulated terminals with real agents): capture,
// deploy, `tms dev mutate`, capture, `tms update --wait --json` (incremental on all three),
// again (stop), then one terminal changed and forgotten (full for it); `task show --json`
// carries each terminal's decision and bytes.
func TestUpdateCommand(t *testing.T) {
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: t.TempDir(), TemporalPort: -1, UIPort: -1, CentralPort: -1, RegionPortBase: -1,
		Regions: []string{"region-a", "region-b"}, Terminals: 3, DiskSize: 16 << 20, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	run := newRunner(nil)
	tms := func(args ...string) string {
		t.Helper()
		return must(t, run, append([]string{"--temporal", env.TemporalAddress()}, args...)...)
	}
	src, _ := env.Terminal("a-pc1")
	tms("image", "capture", "--region", "region-a", "--terminal", "a-pc1", "classroom", "--wait")
	tms("deploy", "--region", "region-b", "--group", "lab", "classroom", "--wait")
	if out := tms("dev", "mutate", "--fraction", "0.002", "--seed", "21", src.Disk); !strings.Contains(out, "touching") {
		t.Fatalf("dev mutate: %s", out)
	}
	tms("image", "capture", "--region", "region-a", "--terminal", "a-pc1", "classroom", "--wait")
	want := storetest.FileSum(t, src.Disk)

	fail(t, run, 2, "not both", "update", "--region", "region-b", "--group", "lab", "--terminal", "b-pc1", "classroom")
	fail(t, run, 2, "--group or --terminal is required", "update", "--region", "region-b", "classroom")

	update := []string{"update", "--region", "region-b", "--group", "lab", "classroom", "--wait", "--json"}
	res := decode[workflows.UpdateImageResult](t, string(decode[taskJSON](t, tms(update...)).Result))
	if res.Incremental != 3 || res.Failed != 0 || res.FetchedBytes == 0 {
		t.Fatalf("first update: %+v", res)
	}
	for _, term := range env.Terminals {
		if term.Region == "region-b" && storetest.FileSum(t, term.Disk) != want {
			t.Errorf("%s differs from a-pc1 after the update", term.Name)
		}
	}
	id := "update/region-b/lab/classroom" + testStamp
	d := decode[taskDetail](t, tms("task", "show", id, "--json"))
	shown := decode[workflows.UpdateImageResult](t, string(d.Result))
	if d.Type != "UpdateImage" || len(shown.Terminals) != 3 || shown.Terminals[0].Decision != activities.DecisionIncremental || shown.Terminals[0].Reason == "" || shown.Terminals[0].FetchedBytes == 0 {
		t.Fatalf("task show of the update: %+v", shown)
	}
	if text := tms("task", "show", id); !strings.Contains(text, "3 updated incrementally") {
		t.Fatalf("task show text:\n%s", text)
	}

	if again := decode[workflows.UpdateImageResult](t, string(decode[taskJSON](t, tms(update...)).Result)); again.Stopped != 3 || again.FetchedBytes != 0 {
		t.Fatalf("second update: %+v", again)
	}

	pc3, _ := env.Terminal("b-pc3")
	tms("dev", "mutate", "--fraction", "0.01", "--seed", "22", pc3.Disk)
	if err := env.Regions["region-b"].Inventory.SetVersion(context.Background(), pc3.MAC, manifest.ID{}); err != nil {
		t.Fatal(err)
	}
	out := tms("update", "--region", "region-b", "--group", "lab", "classroom", "--wait")
	if !strings.Contains(out, "2 terminal(s) held it already, 0 updated incrementally, 1 in full") {
		t.Fatalf("third update: %s", out)
	}
	if storetest.FileSum(t, pc3.Disk) != want {
		t.Error("b-pc3 differs from a-pc1 after its full update")
	}
	started := decode[taskJSON](t, tms("update", "--region", "region-b", "--terminal", "b-pc1", "classroom", "--json"))
	if started.Task != "update/region-b/b-pc1/classroom"+testStamp || started.UI == "" {
		t.Fatalf("update --json without --wait: %+v", started)
	}
}

func TestUpdateProgressLineAndSummary(t *testing.T) {
	js := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	tp := func(name string, phase workflows.Phase, d activities.Decision) workflows.UpdateTerminalProgress {
		return workflows.UpdateTerminalProgress{TerminalProgress: workflows.TerminalProgress{Name: name, Phase: phase}, Decision: d}
	}
	d := &taskDetail{Type: "UpdateImage", Status: "Running", Progress: js(workflows.UpdateProgress{Phase: "updating", Terminals: []workflows.UpdateTerminalProgress{
		tp("pc1", "done", "stop"), tp("pc2", "updating", "incremental"), tp("pc3", "updating", "full"), tp("pc4", "queued", "incremental")}})}
	d.children = append(d.children, &taskDetail{Type: "UpdateTerminal", Pending: []pendingActivity{
		{Type: "WaitForAgent", Progress: js(activities.AgentProgress{Phase: "writing", Done: 1 << 20, Total: 4 << 20})}}})
	got := d.progressLine()
	for _, want := range []string{"update: updating (4 terminals: 1 done, 0 failed, 2 updating, 1 queued; 1 stop, 2 incremental, 1 full)", "1 terminal(s) reporting 25.0%"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress line %q lacks %q", got, want)
		}
	}
	res := workflows.UpdateImageResult{Version: strings.Repeat("ab", 32), Stopped: 1, Incremental: 1, Full: 1, Failed: 1, FetchedBytes: 3 << 20, WrittenBytes: 3 << 20,
		Terminals: []workflows.UpdateOutcome{{Name: "pc3", Decision: "full", OK: false, Error: "the disk is write-protected"}}}
	sum := resultSummary("UpdateImage", js(res))
	for _, want := range []string{"version abababababab: 1 terminal(s) held it already, 1 updated incrementally, 1 in full; 3.0 MiB fetched", "pc3 (full) failed: the disk is write-protected"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
	out := workflows.UpdateOutcome{Name: "pc2", Decision: "incremental", Reason: "holds 81bc00000000, 1 version back", FetchedBytes: 1 << 20, WrittenBytes: 1 << 20}
	if sum := resultSummary("UpdateTerminal", js(out)); !strings.Contains(sum, "terminal pc2: incremental (holds 81bc00000000, 1 version back), 1.0 MiB fetched") {
		t.Errorf("terminal summary %q", sum)
	}
}
