package activities_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

// putVersion publishes a manifest of the given geometry and chunk names (no chunk data: the
// decision reads manifests only).
func putVersion(t *testing.T, s *store.Store, parent manifest.ID, disk, chunk int64, chunks ...string) manifest.ID {
	t.Helper()
	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, DiskSize: disk, ChunkSize: chunk, Parent: parent,
		Meta: manifest.Meta{Name: "lab", Created: time.Unix(1700000000, 0).UTC()}}
	for _, c := range chunks {
		m.Chunks = append(m.Chunks, manifest.BLAKE3.Sum([]byte(c)))
	}
	b, err := manifest.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.PutVersion(context.Background(), b, store.Stats{})
	if err != nil {
		t.Fatal(err)
	}
	return v.ID
}

// TestDecideUpdate checks every decision DecideUpdate makes and the reason it gives, from the
// inventory's record of each disk and the target's chain in the region's store.
func TestDecideUpdate(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	const c = 64 << 10
	v1 := putVersion(t, s, manifest.ID{}, 4*c, c, "a", "b", "c", "d")
	v2 := putVersion(t, s, v1, 4*c, c, "a", "B", "c", "d")
	v3 := putVersion(t, s, v2, 4*c, c, "a", "B", "C", "D")
	other := putVersion(t, s, manifest.ID{}, 4*c, c, "w", "x", "y", "z")
	wide := putVersion(t, s, manifest.ID{}, 4*c, 2*c, "a", "b")
	v4 := putVersion(t, s, wide, 4*c, c, "a", "b", "c", "e") // child of another geometry
	gone := putVersion(t, s, v3, 4*c, c, "a", "B", "C", "E")
	v5 := putVersion(t, s, gone, 4*c, c, "a", "B", "C", "F")
	if err := s.Backend().Delete(ctx, "manifests/"+gone.String()); err != nil {
		t.Fatal(err)
	}

	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "inventory.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	r := &activities.Region{ID: "region-b", Store: s, Inventory: inv}
	for _, tc := range []struct {
		name         string
		holds        manifest.ID
		target       manifest.ID
		want         activities.Decision
		reason       string
		changedBytes int64
	}{
		{"same version", v3, v3, activities.DecisionStop, "holds " + v3.Short() + " already", 0},
		{"parent", v2, v3, activities.DecisionIncremental, "1 version back on its chain: 2 of 4 chunks changed", 2 * c},
		{"grandparent", v1, v3, activities.DecisionIncremental, "2 versions back on its chain: 3 of 4 chunks changed", 3 * c},
		{"nothing recorded", manifest.ID{}, v3, activities.DecisionFull, "no version is recorded", 0},
		{"diverged", other, v3, activities.DecisionFull, "not on the chain of " + v3.Short() + " (diverged)", 0},
		{"descendant", v3, v2, activities.DecisionFull, "(diverged)", 0},
		{"another geometry", wide, v4, activities.DecisionFull, "an ancestor of another geometry", 0},
		{"chain not in the store", v1, v5, activities.DecisionFull, "it does not hold " + gone.Short(), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const mac = "52:54:00:00:00:01"
			if err := inv.Enroll(ctx, mac, "pc1"); err != nil {
				t.Fatal(err)
			}
			if err := inv.SetVersion(ctx, mac, tc.holds); err != nil {
				t.Fatal(err)
			}
			res, err := r.DecideUpdate(ctx, activities.DecideInput{Version: tc.target.String(), Terminals: []activities.TerminalRef{{MAC: mac}}})
			if err != nil {
				t.Fatal(err)
			}
			d := res.Terminals[0]
			if d.Decision != tc.want || !strings.Contains(d.Reason, tc.reason) || d.ChangedBytes != tc.changedBytes {
				t.Fatalf("decision %+v; want %s, saying %q, %d bytes changed", d, tc.want, tc.reason, tc.changedBytes)
			}
			if (d.Base != "") != (d.Decision == activities.DecisionIncremental) || d.Base != "" && d.Base != tc.holds.String() {
				t.Fatalf("base %q for a decision %s from %s", d.Base, d.Decision, tc.holds.Short())
			}
		})
	}

	if _, err := r.DecideUpdate(ctx, activities.DecideInput{Version: manifest.BLAKE3.Sum([]byte("nope")).String()}); !activities.ErrNotHere.Matches(err) {
		t.Errorf("a target the region lacks: %v, want NotHere", err)
	}
	if _, err := r.DecideUpdate(ctx, activities.DecideInput{Version: v3.String(), Terminals: []activities.TerminalRef{{MAC: "52:54:00:00:00:09"}}}); !activities.ErrUnknownTerminal.Matches(err) {
		t.Errorf("an unknown terminal: %v, want UnknownTerminal", err)
	}
}

// TestUpdateTaskHoldsTargetAndBase: PrepareTask of an update holds both versions until
// FinishTask, records the base with the task, and refuses a base of another geometry or one
// the region lacks.
func TestUpdateTaskHoldsTargetAndBase(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	const c = 64 << 10
	v1 := putVersion(t, s, manifest.ID{}, 4*c, c, "a", "b", "c", "d")
	v2 := putVersion(t, s, v1, 4*c, c, "a", "B", "c", "d")
	wide := putVersion(t, s, manifest.ID{}, 4*c, 2*c, "a", "b")
	if err := s.PutSignature(ctx, v2, centralKey.SignVersion(v2)); err != nil {
		t.Fatal(err)
	}
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "inventory.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	inv.Enroll(ctx, "52:54:00:00:07:01", "pc-07")
	r := &activities.Region{ID: "region-b", Store: s, Inventory: inv, CentralKey: centralKey.Public()}
	in := activities.TaskInput{TerminalRef: "pc-07", Kind: "update", Version: v2.String(), Expires: time.Now().Add(time.Hour)}
	for _, tc := range []struct {
		name string
		base string
		want activities.ErrorType
	}{
		{"no base", "", activities.ErrBadInput},
		{"base not here", manifest.BLAKE3.Sum([]byte("x")).String(), activities.ErrNotHere},
		{"base of another geometry", wide.String(), activities.ErrBadInput},
	} {
		in.Task, in.Base = "update/bad/"+tc.name, tc.base
		if _, err := r.PrepareTask(ctx, in); !tc.want.Matches(err) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	// The terminal holds something else than the decided base (another task wrote it since).
	in.Task, in.Base = "update/region-b/pc-07/lab@run-0", v1.String()
	if _, err := r.PrepareTask(ctx, in); !activities.ErrConflict.Matches(err) || !strings.Contains(err.Error(), "no known version") {
		t.Fatalf("an update of a terminal not recorded as holding its base: %v, want Conflict", err)
	}
	if err := inv.SetVersion(ctx, "52:54:00:00:07:01", v1); err != nil {
		t.Fatal(err)
	}
	in.Task = "update/region-b/pc-07/lab@run-1"
	ref, err := r.PrepareTask(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	// A retry of the same PrepareTask after its agent made the record unknown still passes.
	inv.SetVersion(ctx, ref.MAC, manifest.ID{})
	if _, err := r.PrepareTask(ctx, in); err != nil {
		t.Fatalf("retried PrepareTask of the same update: %v", err)
	}
	task, err := inv.Task(ctx, in.Task)
	if err != nil || task.Kind != "update" || task.Base != v1.String() || task.Version != v2.String() {
		t.Fatalf("recorded task %+v, %v", task, err)
	}
	if a, _ := inv.BootAction(ctx, ref.MAC, time.Now()); a.Action != "update" || a.Task != in.Task {
		t.Fatalf("boot action %+v", a)
	}
	for _, v := range []manifest.ID{v1, v2} {
		if hs, _ := s.Holds(ctx, v); len(hs) != 1 || hs[0].Holder != in.Task {
			t.Fatalf("holds of %s during the update: %+v", v.Short(), hs)
		}
	}
	if err := r.FinishTask(ctx, activities.FinishInput{Task: in.Task, MAC: ref.MAC, State: state.TaskDone, Version: v2.String()}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []manifest.ID{v1, v2} {
		if hs, _ := s.Holds(ctx, v); len(hs) != 0 {
			t.Fatalf("holds of %s after the update: %+v", v.Short(), hs)
		}
	}
	if term, _ := inv.Terminal(ctx, ref.MAC); term.Version != v2 {
		t.Fatalf("the terminal holds %s after the update, want %s", term.Version.Short(), v2.Short())
	}
}
