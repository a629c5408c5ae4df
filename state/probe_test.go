package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"tms/agentwire"
)

// TestMigration14KeepsRowsAndAllowsProbes opens an inventory made before probes (every
// migration before 14, with an update task and its boot action in it): migration 14 keeps
// both rows, base included, and the rebuilt tables take probe tasks and boot actions.
func TestMigration14KeepsRowsAndAllowsProbes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "inventory.db")
	var before []migration
	for _, m := range inventoryMigrations {
		if m.version < 14 {
			before = append(before, m)
		}
	}
	db, err := open(ctx, path, before)
	if err != nil {
		t.Fatal(err)
	}
	old := &Inventory{db: db}
	const mac = "52:54:00:00:00:01"
	now := time.Unix(1700000000, 0)
	if err := old.Enroll(ctx, mac, "pc1"); err != nil {
		t.Fatal(err)
	}
	// The task rows are written as the code of schema 13 wrote them (today's StartTask writes
	// columns added since).
	insertTask := func(id string, kind agentwire.Kind, version, base string) error {
		_, err := db.ExecContext(ctx, `INSERT INTO tasks (id, mac, kind, image, state, created, updated, base) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			id, mac, kind, version, TaskWaiting, now.UnixNano(), now.UnixNano(), base)
		return err
	}
	if err := insertTask("update/r/pc1@1", agentwire.KindUpdate, "v2", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := old.SetBootAction(ctx, mac, BootAction{Action: agentwire.ActionUpdate, Task: "update/r/pc1@1", Version: "v2", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := insertTask("p", agentwire.KindProbe, "v3", ""); err == nil {
		t.Fatal("schema 13 took a probe task: the test does not test the migration")
	}
	db.Close()

	inv, err := OpenInventory(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	got, err := inv.Task(ctx, "update/r/pc1@1")
	if err != nil || got.Kind != agentwire.KindUpdate || got.Version != "v2" || got.Base != "v1" {
		t.Fatalf("task after migration: %+v, %v", got, err)
	}
	if a, err := inv.BootAction(ctx, mac, now); err != nil || a.Action != agentwire.ActionUpdate || a.Version != "v2" {
		t.Fatalf("boot action after migration: %+v, %v", a, err)
	}
	if _, _, err := inv.FinishTask(ctx, got.ID, TaskDone, "", "", now); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.StartTask(ctx, Task{ID: "bootenv-rollout/v3@1", MAC: mac, Kind: agentwire.KindProbe, Version: "v3"}, now); err != nil {
		t.Fatal(err)
	}
	if err := inv.SetBootAction(ctx, mac, BootAction{Action: agentwire.ActionProbe, Task: "bootenv-rollout/v3@1", Version: "v3", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if a, err := inv.BootAction(ctx, mac, now); err != nil || a.Action != agentwire.ActionProbe || a.Version != "v3" {
		t.Fatalf("a probe's boot action: %+v, %v", a, err)
	}
	if p, err := inv.Task(ctx, "bootenv-rollout/v3@1"); err != nil || p.Version != "v3" || p.Image != "" {
		t.Fatalf("a probe task: %+v, %v", p, err)
	}
}
