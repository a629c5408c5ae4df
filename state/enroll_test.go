package state

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"tms/agentwire"
	"tms/store"
)

func TestFirstSeenMigrationOnAnOlderDatabase(t *testing.T) {
	forEachBackend(t, testFirstSeenMigrationOnAnOlderDatabase)
}

func testFirstSeenMigrationOnAnOlderDatabase(t *testing.T) {
	ctx := context.Background()
	path := testDB(t, "region.db")
	var upTo4 []migration
	for _, m := range inventoryMigrations {
		if m.version <= 4 {
			upTo4 = append(upTo4, m)
		}
	}
	db, err := open(ctx, path, upTo4)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	if _, err := db.Exec(`INSERT INTO terminals (mac, last_ip, last_seen) VALUES ('52:54:00:00:00:01', '10.0.0.1', ?)`, old.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO terminals (mac, name, enrolled) VALUES ('52:54:00:00:00:02', 'pc2', 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	inv, err := OpenInventory(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	seen, err := inv.SeenTerminals(ctx)
	if err != nil || len(seen) != 1 || !seen[0].FirstSeen.Equal(old) || !seen[0].LastSeen.Equal(old) || seen[0].LastIP != "10.0.0.1" {
		t.Fatalf("an existing seen terminal after migration 7: %+v, %v", seen, err)
	}

	// From now on, first_seen is the first time a terminal shows up, and stays.
	later := old.Add(time.Hour)
	for _, s := range []struct {
		mac string
		at  time.Time
	}{{"52:54:00:00:00:03", later}, {"52:54:00:00:00:03", later.Add(time.Hour)}, {"52:54:00:00:00:01", later}, {"52:54:00:00:00:02", later}} {
		if err := inv.Seen(ctx, s.mac, "10.0.0.9", s.at); err != nil {
			t.Fatal(err)
		}
	}
	seen, err = inv.SeenTerminals(ctx)
	if err != nil || len(seen) != 2 || seen[0].MAC != "52:54:00:00:00:01" || !seen[0].FirstSeen.Equal(old) || !seen[0].LastSeen.Equal(later) ||
		seen[1].MAC != "52:54:00:00:00:03" || !seen[1].FirstSeen.Equal(later) || !seen[1].LastSeen.Equal(later.Add(time.Hour)) {
		t.Fatalf("seen terminals: %+v, %v", seen, err)
	}
	// An enrolled terminal never seen before gets its first_seen when it first shows up.
	var first int64
	if err := inv.db.QueryRow(`SELECT first_seen FROM terminals WHERE mac = '52:54:00:00:00:02'`).Scan(&first); err != nil || first != later.UnixNano() {
		t.Fatalf("first_seen of a terminal enrolled before it was seen: %d, %v", first, err)
	}
}

// roomInv is an inventory with pc1 and pc2 in room1 (pc1 also in row1) and pc3 in no group.
func roomInv(t *testing.T) *Inventory {
	t.Helper()
	ctx := context.Background()
	inv := openInv(t)
	for i, name := range []string{"pc1", "pc2", "pc3"} {
		if err := inv.Enroll(ctx, "52:54:00:00:00:0"+string(rune('1'+i)), name); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{"room1", "row1", "empty"} {
		if err := inv.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := inv.AddToGroup(ctx, "room1", "pc1", "pc2"); err != nil {
		t.Fatal(err)
	}
	if err := inv.AddToGroup(ctx, "row1", "pc1"); err != nil {
		t.Fatal(err)
	}
	return inv
}

func members(t *testing.T, inv *Inventory, group string) []string {
	t.Helper()
	ms, err := inv.Members(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names
}

func TestRemoveTerminals(t *testing.T) { forEachBackend(t, testRemoveTerminals) }

func testRemoveTerminals(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	inv := roomInv(t)
	if _, err := inv.IssueAgentKey(ctx, "52:54:00:00:00:01"); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.StartTask(ctx, Task{ID: "deploy/r/pc2/lab-1", MAC: "52:54:00:00:00:02", Kind: agentwire.KindDeploy, Version: "v"}, now); err != nil {
		t.Fatal(err)
	}
	if err := inv.SetBootAction(ctx, "52:54:00:00:00:03", BootAction{Action: agentwire.ActionCapture, Task: "capture/r/pc3/lab-1", Image: "lab", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		terms []string
		want  string
		is    error
	}{
		{"an unfinished task refuses, naming it", []string{"pc1", "pc2"}, "terminal pc2 has the unfinished task deploy/r/pc2/lab-1", ErrBusy},
		{"a boot action into a task refuses, naming it", []string{"pc3"}, "capture/r/pc3/lab-1", ErrConflict},
		{"an unknown terminal is not found", []string{"pc9"}, "terminal pc9", store.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inv.RemoveTerminals(ctx, now, tc.terms...)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q (%v)", err, tc.want, tc.is)
			}
		})
	}
	if _, err := inv.Terminal(ctx, "pc1"); err != nil {
		t.Fatalf("pc1 was removed along with a refused pc2: %v", err)
	}

	// Once the task is over and the boot action expired, they go.
	if _, _, err := inv.FinishTask(ctx, "deploy/r/pc2/lab-1", TaskDone, "", "", now); err != nil {
		t.Fatal(err)
	}
	removed, err := inv.RemoveTerminals(ctx, now.Add(2*time.Hour), "pc1", "52:54:00:00:00:02", "pc3")
	if err != nil || len(removed) != 3 || removed[0].MAC != "52:54:00:00:00:01" {
		t.Fatalf("remove: %+v, %v", removed, err)
	}
	if got := members(t, inv, "room1"); len(got) != 0 {
		t.Fatalf("room1 after removing its members: %v", got)
	}
	// Its agent key went with it: enrolled again, it has none.
	if err := inv.Enroll(ctx, "52:54:00:00:00:01", "pc1"); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.AgentKey(ctx, "52:54:00:00:00:01"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("agent key of a removed and re-enrolled terminal: %v", err)
	}
	if ts, err := inv.Tasks(ctx, "52:54:00:00:00:02", 10); err != nil || len(ts) != 1 {
		t.Fatalf("finished tasks of a removed terminal are kept: %+v, %v", ts, err)
	}
}

func TestRenameTerminal(t *testing.T) { forEachBackend(t, testRenameTerminal) }

func testRenameTerminal(t *testing.T) {
	ctx := context.Background()
	inv := roomInv(t)
	if err := inv.Seen(ctx, "52:54:00:00:00:09", "10.0.0.9", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, term, to, want string
		is                   error
	}{
		{"a taken name is refused, naming its MAC", "pc1", "pc2", `"pc2" is taken by 52:54:00:00:00:02`, ErrConflict},
		{"an unknown terminal is not found", "pc9", "pc10", "terminal pc9", store.ErrNotFound},
		{"a bad name is refused", "pc1", "pc 1", `character ' ' is not allowed`, ErrInvalid},
		{"a terminal not enrolled is refused", "52:54:00:00:00:09", "pc9", "not enrolled", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := inv.RenameTerminal(ctx, tc.term, tc.to)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want %q (%v)", err, tc.want, tc.is)
			}
		})
	}
	if _, err := inv.RenameTerminal(ctx, "pc1", "pc1"); err != nil {
		t.Fatalf("renaming to its own name: %v", err)
	}
	if _, err := inv.RenameTerminal(ctx, "pc1", "front-1"); err != nil {
		t.Fatal(err)
	}
	if term, err := inv.Terminal(ctx, "front-1"); err != nil || term.MAC != "52:54:00:00:00:01" {
		t.Fatalf("renamed: %+v, %v", term, err)
	}
	if got := members(t, inv, "room1"); !slices.Equal(got, []string{"front-1", "pc2"}) {
		t.Fatalf("room1 after the rename: %v", got)
	}
}

func TestMoveAndRemoveFromGroup(t *testing.T) { forEachBackend(t, testMoveAndRemoveFromGroup) }

func testMoveAndRemoveFromGroup(t *testing.T) {
	ctx := context.Background()
	inv := roomInv(t)
	if err := inv.MoveTerminals(ctx, "row1", "pc2", "pc3"); err != nil {
		t.Fatal(err)
	}
	if got := members(t, inv, "room1"); !slices.Equal(got, []string{"pc1"}) {
		t.Fatalf("room1 after moving pc2 out: %v", got)
	}
	if got := members(t, inv, "row1"); !slices.Equal(got, []string{"pc1", "pc2", "pc3"}) {
		t.Fatalf("row1 after moving pc2, pc3 in: %v", got)
	}
	if err := inv.MoveTerminals(ctx, "nope", "pc1"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "group nope") {
		t.Fatalf("move to an unknown group: %v", err)
	}
	if err := inv.MoveTerminals(ctx, "room1", "pc9"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "terminal pc9") {
		t.Fatalf("move of an unknown terminal: %v", err)
	}

	if err := inv.RemoveFromGroup(ctx, "row1", "pc2", "pc1"); err != nil {
		t.Fatal(err)
	}
	if got := members(t, inv, "row1"); !slices.Equal(got, []string{"pc3"}) {
		t.Fatalf("row1 after taking pc1, pc2 out: %v", got)
	}
	if err := inv.RemoveFromGroup(ctx, "row1", "pc3", "pc2"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "terminal pc2 in group row1") {
		t.Fatalf("taking out a terminal that is not a member: %v", err)
	}
	if got := members(t, inv, "row1"); !slices.Equal(got, []string{"pc3"}) {
		t.Fatalf("a refused remove took pc3 out: %v", got)
	}
	if err := inv.RemoveFromGroup(ctx, "nope", "pc3"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "group nope") {
		t.Fatalf("remove from an unknown group: %v", err)
	}
	if _, err := inv.Terminal(ctx, "pc2"); err != nil {
		t.Fatalf("pc2 taken out of its groups is still enrolled: %v", err)
	}
}

func TestRemoveGroup(t *testing.T) { forEachBackend(t, testRemoveGroup) }

func testRemoveGroup(t *testing.T) {
	ctx := context.Background()
	inv := roomInv(t)
	if n, err := inv.RemoveGroup(ctx, "room1", false); !errors.Is(err, ErrConflict) || n != 2 || !strings.Contains(err.Error(), "group room1 has 2 terminal(s)") {
		t.Fatalf("removing a group with members: %d, %v", n, err)
	}
	if _, err := inv.RemoveGroup(ctx, "empty", false); err != nil {
		t.Fatal(err)
	}
	if n, err := inv.RemoveGroup(ctx, "room1", true); err != nil || n != 2 {
		t.Fatalf("forced: %d, %v", n, err)
	}
	if _, err := inv.RemoveGroup(ctx, "room1", true); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "group room1") {
		t.Fatalf("removing a removed group: %v", err)
	}
	gs, err := inv.Groups(ctx)
	if err != nil || !slices.Equal(gs, []string{"row1"}) {
		t.Fatalf("groups: %v, %v", gs, err)
	}
	if term, err := inv.Terminal(ctx, "pc2"); err != nil || !term.Enrolled {
		t.Fatalf("a member of a removed group stays enrolled: %+v, %v", term, err)
	}
}

func TestParseNamePattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, want1, want12, err string
	}{
		{"r3-pc{n}", "r3-pc1", "r3-pc12", ""},
		{"r3-pc{n:02}", "r3-pc01", "r3-pc12", ""},
		{"{n:03}.lab", "001.lab", "012.lab", ""},
		{"pc", "", "", "needs one {n}"},
		{"pc{n}{n}", "", "", "needs one {n}"},
		{"pc}n{", "", "", "needs one {n}"},
		{"pc{m}", "", "", "{m} is not {n}"},
		{"pc{n:2}", "", "", "{n:2} is not {n}"},
		{"pc{n:00}", "", "", "{n:00} is not {n}"},
		{"pc {n}", "", "", "not allowed"},
		{"-{n}", "", "", "must start with a letter or digit"},
	} {
		p, err := ParseNamePattern(tc.pattern)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want an error with %q", tc.pattern, err, tc.err)
			}
			continue
		}
		if err != nil || p.Name(1) != tc.want1 || p.Name(12) != tc.want12 || p.String() != tc.pattern {
			t.Errorf("%q: %+v (%s, %s), %v", tc.pattern, p, p.Name(1), p.Name(12), err)
		}
		if n, ok := p.Number(tc.want12); !ok || n != 12 {
			t.Errorf("%q: number of %s: %d, %v", tc.pattern, tc.want12, n, ok)
		}
	}
	p, _ := ParseNamePattern("pc{n}")
	for _, name := range []string{"pc", "pcx", "pc1x", "lab1", "pc-1"} {
		if n, ok := p.Number(name); ok {
			t.Errorf("pc{n} numbers %q as %d", name, n)
		}
	}
}

func TestEnrollSeenNumbersInFirstSeenOrder(t *testing.T) {
	forEachBackend(t, testEnrollSeenNumbersInFirstSeenOrder)
}

func testEnrollSeenNumbersInFirstSeenOrder(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	start := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	// Seats 1..4 switched on in order, each seen again later (a later DHCP renewal must not
	// change the order); MACs in another order.
	macs := []string{"52:54:00:00:00:44", "52:54:00:00:00:11", "52:54:00:00:00:33", "52:54:00:00:00:22"}
	for i, mac := range macs {
		if err := inv.Seen(ctx, mac, "10.0.0.1", start.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	for i, mac := range macs {
		if err := inv.Seen(ctx, mac, "10.0.0.1", start.Add(time.Hour-time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	// r3-pc05 exists already: numbering goes on after it.
	if err := inv.Enroll(ctx, "52:54:00:00:00:99", "r3-pc05"); err != nil {
		t.Fatal(err)
	}
	p, err := ParseNamePattern("r3-pc{n:02}")
	if err != nil {
		t.Fatal(err)
	}
	res, err := inv.EnrollSeen(ctx, "room3", p, 3)
	if err != nil || !res.CreatedGroup || len(res.Enrolled) != 3 {
		t.Fatalf("enroll seen: %+v, %v", res, err)
	}
	for i, want := range []string{"r3-pc06", "r3-pc07", "r3-pc08"} {
		if res.Enrolled[i].MAC != macs[i] || res.Enrolled[i].Name != want {
			t.Errorf("enrolled %d: %+v, want %s as %s", i, res.Enrolled[i], macs[i], want)
		}
	}
	if got := members(t, inv, "room3"); !slices.Equal(got, []string{"r3-pc06", "r3-pc07", "r3-pc08"}) {
		t.Fatalf("room3: %v", got)
	}
	// The rest, into the group that now exists.
	res, err = inv.EnrollSeen(ctx, "room3", p, 0)
	if err != nil || res.CreatedGroup || len(res.Enrolled) != 1 || res.Enrolled[0].Name != "r3-pc09" || res.Enrolled[0].MAC != macs[3] {
		t.Fatalf("enroll the rest: %+v, %v", res, err)
	}
	// Nothing left: nothing done, and no group made.
	res, err = inv.EnrollSeen(ctx, "room4", p, 0)
	if err != nil || len(res.Enrolled) != 0 || res.CreatedGroup {
		t.Fatalf("nothing to enroll: %+v, %v", res, err)
	}
	if gs, _ := inv.Groups(ctx); !slices.Equal(gs, []string{"room3"}) {
		t.Fatalf("groups: %v", gs)
	}
	if _, err := inv.EnrollSeen(ctx, "bad group", p, 0); err == nil || !strings.Contains(err.Error(), "group name") {
		t.Fatalf("a bad group name: %v", err)
	}
	if _, err := inv.EnrollSeen(ctx, "room3", p, -1); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("a negative limit: %v", err)
	}
}

func FuzzParseNamePattern(f *testing.F) {
	for _, s := range []string{"r3-pc{n}", "r3-pc{n:02}", "{n:09}x", "pc{n", "{}", "a{n:0}"} {
		f.Add(s, 7)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		p, err := ParseNamePattern(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: an error that is not ErrInvalid: %v", s, err)
			}
			return
		}
		if n < 0 {
			n = -n
		}
		n %= 1000000
		name := p.Name(n)
		if got, ok := p.Number(name); !ok || got != n {
			t.Fatalf("%q: %d makes %q, read back as %d, %v", s, n, name, got, ok)
		}
		if again, err := ParseNamePattern(p.String()); err != nil || again != p {
			t.Fatalf("%q: String %q parses as %+v, %v", s, p.String(), again, err)
		}
	})
}
