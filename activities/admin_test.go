package activities_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/agentwire"
	"tms/internal/pgtest"
	"tms/state"
)

// labRegion is a region whose inventory has pc1 (busy with a capture) and pc2 in room1, and
// two PCs seen on the network, not enrolled.
func labRegion(t *testing.T) (*activities.Region, *state.Inventory) {
	t.Helper()
	ctx := context.Background()
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "region.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	r := &activities.Region{ID: "region-a", Inventory: inv, Now: func() time.Time { return now }}
	for _, in := range []activities.AdminInput{
		{Op: activities.OpEnroll, MAC: "52:54:00:00:00:01", Name: "pc1"},
		{Op: activities.OpEnroll, MAC: "52:54:00:00:00:02", Name: "pc2"},
		{Op: activities.OpGroupCreate, Group: "room1"},
		{Op: activities.OpGroupAdd, Group: "room1", Terminals: []string{"pc1", "pc2"}},
	} {
		if _, err := r.Admin(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if err := inv.SetBootAction(ctx, "52:54:00:00:00:01", state.BootAction{Action: agentwire.ActionCapture, Task: "capture/region-a/pc1/lab", Image: "lab", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for i, mac := range []string{"52:54:00:00:00:0b", "52:54:00:00:00:0a"} {
		if err := inv.Seen(ctx, mac, "10.0.0.1"+string(rune('0'+i)), now.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	return r, inv
}

func TestAdminRefusesWithErrorsThatNameTheMistake(t *testing.T) {
	ctx := context.Background()
	r, _ := labRegion(t)
	for _, tc := range []struct {
		name     string
		in       activities.AdminInput
		errType  string
		contains string
	}{
		{"removing a terminal busy with a task", activities.AdminInput{Op: activities.OpTerminalRm, Terminals: []string{"pc1"}}, "Conflict", "unfinished task capture/region-a/pc1/lab"},
		{"removing an unknown terminal", activities.AdminInput{Op: activities.OpTerminalRm, Terminals: []string{"pc9"}}, "NotFound", "region region-a: terminal pc9"},
		{"removing nothing", activities.AdminInput{Op: activities.OpTerminalRm}, "BadInput", "at least one terminal"},
		{"renaming to a taken name", activities.AdminInput{Op: activities.OpRename, Terminals: []string{"pc2"}, Name: "pc1"}, "Conflict", `"pc1" is taken by 52:54:00:00:00:01`},
		{"renaming to a bad name", activities.AdminInput{Op: activities.OpRename, Terminals: []string{"pc2"}, Name: "pc/2"}, "BadInput", "not allowed"},
		{"renaming a terminal that is only seen", activities.AdminInput{Op: activities.OpRename, Terminals: []string{"52:54:00:00:00:0a"}, Name: "pc3"}, "BadInput", "not enrolled"},
		{"moving to an unknown group", activities.AdminInput{Op: activities.OpMove, Group: "room9", Terminals: []string{"pc1"}}, "NotFound", "group room9"},
		{"removing a group with members", activities.AdminInput{Op: activities.OpGroupRm, Group: "room1"}, "Conflict", "group room1 has 2 terminal(s)"},
		{"removing an unknown group", activities.AdminInput{Op: activities.OpGroupRm, Group: "room9"}, "NotFound", "group room9"},
		{"taking out a terminal that is not a member", activities.AdminInput{Op: activities.OpGroupTakeOut, Group: "room1", Terminals: []string{"52:54:00:00:00:0a"}}, "NotFound", "in group room1"},
		{"enrolling with a bad pattern", activities.AdminInput{Op: activities.OpEnrollSeen, Group: "room2", Pattern: "pc"}, "BadInput", `name pattern "pc" needs one {n}`},
		{"importing a file that is not CSV", activities.AdminInput{Op: activities.OpImport, CSV: []byte("a,\"b\n")}, "BadInput", "line 1 is not CSV"},
		{"importing too big a file", activities.AdminInput{Op: activities.OpImport, CSV: make([]byte, state.MaxRosterBytes+1)}, "BadInput", "at most 262144"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Admin(ctx, tc.in)
			if appErrType(err) != tc.errType || !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("got %v (type %q), want %s with %q", err, appErrType(err), tc.errType, tc.contains)
			}
		})
	}
}

func TestAdminKeepsTheInventory(t *testing.T) {
	ctx := context.Background()
	r, inv := labRegion(t)
	env := (&testsuite.WorkflowTestSuite{}).NewTestActivityEnvironment()
	env.RegisterActivity(r)
	admin := func(in activities.AdminInput) activities.AdminResult {
		t.Helper()
		v, err := env.ExecuteActivity(r.Admin, in)
		if err != nil {
			t.Fatalf("%s: %v", in.Op, err)
		}
		var res activities.AdminResult
		if err := v.Get(&res); err != nil {
			t.Fatal(err)
		}
		return res
	}

	res := admin(activities.AdminInput{Op: activities.OpSeen})
	if len(res.Seen) != 2 || res.Seen[0].MAC != "52:54:00:00:00:0b" || res.Seen[0].LastIP != "10.0.0.10" || res.Seen[0].FirstSeen.IsZero() {
		t.Fatalf("seen: %+v", res.Seen)
	}
	res = admin(activities.AdminInput{Op: activities.OpEnrollSeen, Group: "room2", Pattern: "r2-pc{n:02}"})
	if !res.CreatedGroup || len(res.Enrolled) != 2 || res.Enrolled[0].Name != "r2-pc01" || res.Enrolled[0].MAC != "52:54:00:00:00:0b" || res.Enrolled[1].Name != "r2-pc02" {
		t.Fatalf("enroll seen: %+v", res)
	}
	admin(activities.AdminInput{Op: activities.OpRename, Terminals: []string{"r2-pc02"}, Name: "r2-teacher"})
	admin(activities.AdminInput{Op: activities.OpMove, Group: "room2", Terminals: []string{"pc2"}})
	admin(activities.AdminInput{Op: activities.OpGroupTakeOut, Group: "room2", Terminals: []string{"r2-teacher"}})
	res = admin(activities.AdminInput{Op: activities.OpGroups})
	want := []activities.GroupInfo{{Name: "room1", Members: []string{"pc1"}}, {Name: "room2", Members: []string{"pc2", "r2-pc01"}}}
	if !slices.EqualFunc(res.Groups, want, func(a, b activities.GroupInfo) bool { return a.Name == b.Name && slices.Equal(a.Members, b.Members) }) {
		t.Fatalf("groups: %+v", res.Groups)
	}
	res = admin(activities.AdminInput{Op: activities.OpGroupRm, Group: "room2", Force: true})
	if res.Members != 2 {
		t.Fatalf("group rm --force: %+v", res)
	}
	res = admin(activities.AdminInput{Op: activities.OpTerminalRm, Terminals: []string{"pc2", "r2-teacher"}})
	if len(res.Removed) != 2 || res.Removed[0].MAC != "52:54:00:00:00:02" {
		t.Fatalf("terminal rm: %+v", res.Removed)
	}

	roster := []byte("mac,name,group\n52:54:00:00:00:02,pc2,room1\n52:54:00:00:00:01,pc9\n52:54:00:00:00:03,pc1\n")
	res = admin(activities.AdminInput{Op: activities.OpImport, CSV: roster, DryRun: true})
	if res.Import.Applied || len(res.Import.Lines) != 3 || res.Import.Lines[0].Outcome != state.ImportAdded ||
		res.Import.Lines[1].Outcome != state.ImportChanged || res.Import.Lines[2].Outcome != state.ImportAdded {
		t.Fatalf("import --dry-run: %+v", res.Import)
	}
	res = admin(activities.AdminInput{Op: activities.OpImport, CSV: roster})
	if !res.Import.Applied {
		t.Fatalf("import: %+v", res.Import)
	}
	if term, err := inv.Terminal(ctx, "pc9"); err != nil || term.MAC != "52:54:00:00:00:01" {
		t.Fatalf("pc1 renamed by the import: %+v, %v", term, err)
	}
	if term, err := inv.Terminal(ctx, "pc1"); err != nil || term.MAC != "52:54:00:00:00:03" {
		t.Fatalf("pc1's name given to another MAC by the import: %+v, %v", term, err)
	}
}
