package cli

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/agentwire"
	"tms/internal/storetest"
	"tms/state"
	"tms/workers"
)

// inventorySetup starts an embedded Temporal server, central's worker over a catalog that
// knows region-a, and region-a's worker over inv; it returns a runner pointed at the server.
func inventorySetup(t *testing.T) (tmsRun, *state.Inventory) {
	t.Helper()
	srv, c := testTemporal(t)
	sc, inv := testState(t, activities.RegionInfo{ID: "region-a"})
	s, _ := storetest.Dir(t)
	startWorkers(t, workers.NewCentral(c, &activities.Central{Catalog: sc}),
		workers.NewRegion(c, &activities.Region{ID: "region-a", Store: s, Inventory: inv}))
	return runnerAt(srv.Address()), inv
}

func TestInventoryCommandsOverTemporal(t *testing.T) {
	run, inv := inventorySetup(t)
	ctx := context.Background()
	start := time.Now().Add(-time.Hour)
	// A room switched on seat by seat: seats 1, 2, 3 in that order (their MACs in another).
	seats := []string{"52:54:00:00:00:13", "52:54:00:00:00:11", "52:54:00:00:00:12"}
	for i, mac := range seats {
		if err := inv.Seen(ctx, mac, "10.0.3.1"+string(rune('0'+i)), start.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	const r = "region-a"

	seen := decode[[]seenRow](t, must(t, run, "terminal", "ls", "--region", r, "--seen", "--json"))
	if len(seen) != 3 || seen[0].MAC != seats[0] || seen[0].LastIP != "10.0.3.10" || seen[0].FirstSeen.IsZero() || seen[2].MAC != seats[2] {
		t.Fatalf("terminal ls --seen: %+v", seen)
	}
	if text := must(t, run, "terminal", "ls", "--region", r, "--seen"); !strings.Contains(text, "FIRST SEEN") || !strings.Contains(text, seats[1]) {
		t.Fatalf("terminal ls --seen text:\n%s", text)
	}

	// The first two seats, then the rest: numbers follow the seats.
	out := must(t, run, "terminal", "enroll", "--region", r, "--seen", "--group", "room3", "--name", "r3-pc{n:02}", "--limit", "2")
	if !strings.Contains(out, "enrolled 2 terminal(s) in region region-a, in group room3 (created)") || !strings.Contains(out, "r3-pc01") || !strings.Contains(out, seats[1]) {
		t.Fatalf("enroll --seen --limit 2: %s", out)
	}
	if out := must(t, run, "terminal", "enroll", "--region", r, "--seen", "--group", "room3", "--name", "r3-pc{n:02}"); !strings.Contains(out, "r3-pc03") || strings.Contains(out, "(created)") {
		t.Fatalf("enroll --seen, the rest: %s", out)
	}
	if out := must(t, run, "terminal", "enroll", "--region", r, "--seen", "--group", "room3"); !strings.Contains(out, "no terminal of region region-a is waiting to be enrolled") {
		t.Fatalf("enroll --seen with none waiting: %s", out)
	}
	terms := decode[[]terminalRow](t, must(t, run, "terminal", "ls", "--region", r, "--json"))
	var names []string
	for i, tr := range terms {
		names = append(names, tr.Name)
		if tr.MAC != seats[i] {
			t.Errorf("%s is %s, want %s", tr.Name, tr.MAC, seats[i])
		}
	}
	if !slices.Equal(names, []string{"r3-pc01", "r3-pc02", "r3-pc03"}) {
		t.Fatalf("terminals after enroll --seen: %+v", terms)
	}
	if text := must(t, run, "terminal", "ls", "--region", r, "--seen"); !strings.Contains(text, "no terminal of region region-a is waiting") {
		t.Fatalf("terminal ls --seen with none: %s", text)
	}
	fail(t, run, 1, `name pattern "r3-pc" needs one {n}`, "terminal", "enroll", "--region", r, "--seen", "--group", "room3", "--name", "r3-pc")
	fail(t, run, 2, "--group is required", "terminal", "enroll", "--region", r, "--seen")
	fail(t, run, 2, "no MAC or NAME with --seen", "terminal", "enroll", "--region", r, "--seen", "--group", "g", "52:54:00:00:00:01", "pc1")
	fail(t, run, 2, "go with --seen", "terminal", "enroll", "--region", r, "--group", "g", "52:54:00:00:00:01", "pc1")

	// Rename, move, take out, remove groups.
	must(t, run, "terminal", "rename", "--region", r, "r3-pc03", "r3-teacher")
	fail(t, run, 1, `terminal name "r3-pc01" is taken by `+seats[0], "terminal", "rename", "--region", r, "r3-pc02", "r3-pc01")
	fail(t, run, 1, "terminal pc9", "terminal", "rename", "--region", r, "pc9", "pc10")
	fail(t, run, 1, "not allowed", "terminal", "rename", "--region", r, "r3-pc02", "r3 pc2")
	fail(t, run, 2, "takes TERMINAL and NEWNAME", "terminal", "rename", "--region", r, "r3-pc02")
	must(t, run, "group", "create", "--region", r, "front")
	must(t, run, "group", "add", "--region", r, "front", "r3-pc01")
	must(t, run, "terminal", "move", "--region", r, "r3-teacher", "r3-pc02", "--to", "front")
	fail(t, run, 1, "group nowhere", "terminal", "move", "--region", r, "r3-pc01", "--to", "nowhere")
	fail(t, run, 2, "--to is required", "terminal", "move", "--region", r, "r3-pc01")
	must(t, run, "group", "remove", "--region", r, "front", "r3-pc02")
	fail(t, run, 1, "terminal r3-pc02 in group front", "group", "remove", "--region", r, "front", "r3-pc02")
	groups := decode[[]groupRow](t, must(t, run, "group", "ls", "--region", r, "--json"))
	if len(groups) != 2 || !slices.Equal(groups[0].Members, []string{"r3-pc01", "r3-teacher"}) || !slices.Equal(groups[1].Members, []string{"r3-pc01"}) {
		t.Fatalf("groups after move and remove: %+v", groups)
	}
	fail(t, run, 1, "group front has 2 terminal(s)", "group", "rm", "--region", r, "front")
	if out := must(t, run, "group", "rm", "--region", r, "front", "--force"); !strings.Contains(out, "2 terminal(s) stay enrolled") {
		t.Fatalf("group rm --force: %s", out)
	}
	fail(t, run, 1, "group front", "group", "rm", "--region", r, "front")

	// A terminal busy with a task stays; the rest go.
	if err := inv.SetBootAction(ctx, seats[0], state.BootAction{Action: agentwire.ActionDeploy, Task: "deploy/region-a/r3-pc01/lab", Version: "v", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	fail(t, run, 1, "terminal r3-pc01 has the unfinished task deploy/region-a/r3-pc01/lab", "terminal", "rm", "--region", r, "r3-pc02", "r3-pc01")
	if out := must(t, run, "terminal", "rm", "--region", r, "r3-pc02"); !strings.Contains(out, "removed r3-pc02 "+seats[1]) {
		t.Fatalf("terminal rm: %s", out)
	}
	fail(t, run, 1, "terminal r3-pc02", "terminal", "rm", "--region", r, "r3-pc02")
	fail(t, run, 2, "at least one TERMINAL", "terminal", "rm", "--region", r)

	// Import: a file with a bad line changes nothing; fixed, it applies.
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := file("bad.csv", "MAC,Name,Group\n"+seats[1]+",r3-pc02,room3\nAABBCCDDEE01,r3-pc04,room3\n52:54:00:00:00:99,r3-pc01,\n")
	code, out, errs := run("terminal", "import", "--region", r, bad)
	if code != 1 || !strings.Contains(out, "r3-pc01 is taken by terminal "+seats[0]) || !strings.Contains(errs, "nothing was imported: 1 of 3 line(s) refused") {
		t.Fatalf("import with a taken name: exit %d\n%s\n%s", code, out, errs)
	}
	good := file("good.csv", "MAC,Name,Group\n"+seats[1]+",r3-pc02,room3\nAABBCCDDEE01,r3-pc04,room3\n"+seats[0]+",r3-pc01,front2\n")
	rep := decode[importReport](t, must(t, run, "terminal", "import", "--region", r, good, "--dry-run", "--json"))
	if rep.Applied || !rep.DryRun || len(rep.Lines) != 3 || rep.Lines[0].Outcome != "added" || rep.Lines[1].MAC != "aa:bb:cc:dd:ee:01" ||
		rep.Lines[2].Outcome != "changed" || !slices.Equal(rep.Lines[2].Changes, []string{"group +front2"}) || !slices.Equal(rep.CreatedGroups, []string{"front2"}) {
		t.Fatalf("import --dry-run --json: %+v", rep)
	}
	if out := must(t, run, "terminal", "import", "--region", r, good); !strings.Contains(out, "imported into region region-a: 2 added, 1 changed, 0 unchanged, new group(s) front2") {
		t.Fatalf("import: %s", out)
	}
	if out := must(t, run, "terminal", "import", "--region", r, good); !strings.Contains(out, "0 added, 0 changed, 3 unchanged") {
		t.Fatalf("import again: %s", out)
	}
	groups = decode[[]groupRow](t, must(t, run, "group", "ls", "--region", r, "--json"))
	if len(groups) != 2 || groups[0].Name != "front2" || !slices.Equal(groups[1].Members, []string{"r3-pc01", "r3-pc02", "r3-pc04"}) {
		t.Fatalf("groups after the import: %+v", groups)
	}
	fail(t, run, 1, "is bigger than 256 KiB", "terminal", "import", "--region", r, file("big.csv", strings.Repeat("#\n", 200<<10)))
	fail(t, run, 1, "line 2 is not CSV", "terminal", "import", "--region", r, file("quote.csv", "mac,name\n\"x,y\n"))
	fail(t, run, 1, "no such file", "terminal", "import", "--region", r, filepath.Join(dir, "none.csv"))
	fail(t, run, 1, "unknown region nowhere", "terminal", "import", "--region", "nowhere", good)
	fail(t, run, 2, "--region is required", "terminal", "import", good)
}
