package state

import (
	"context"
	"testing"
	"time"

	"tms/manifest"
)

// TestMigration5KeepsRowsAndAllowsUpdates opens an inventory written without update tasks
// (every migration but 5, as a build without them made it, with a task and a boot action in
// it): migration 5 keeps both rows and their indexes, and the rebuilt tables take update tasks
// and boot actions.
func TestMigration5KeepsRowsAndAllowsUpdates(t *testing.T) {
	forEachBackend(t, testMigration5KeepsRowsAndAllowsUpdates)
}

func testMigration5KeepsRowsAndAllowsUpdates(t *testing.T) {
	ctx := context.Background()
	path := testDB(t, "inventory.db")
	var without []migration
	for _, m := range inventoryMigrations {
		// (Migrations 13 and 14 change the tables 5 rebuilds: a build without 5 had neither.)
		if m.version != 5 && m.version < siblingSecretMigration.version {
			without = append(without, m)
		}
	}
	db, err := open(ctx, path, without)
	if err != nil {
		t.Fatal(err)
	}
	old := &Inventory{db: db}
	const mac = "52:54:00:00:00:01"
	now := time.Unix(1700000000, 0)
	if err := old.Enroll(ctx, mac, "pc1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO tasks (id, mac, kind, image, state, created, updated) VALUES ('deploy/r/pc1/win@1', ?, 'deploy', 'v', 'waiting', 1, 2)`, mac); err != nil {
		t.Fatal(err)
	}
	if err := old.SetBootAction(ctx, mac, BootAction{Action: "deploy", Task: "deploy/r/pc1/win@1", Version: "v", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO tasks (id, mac, kind, image, state, created, updated) VALUES ('u', ?, 'update', 'v', 'waiting', 1, 2)`, mac); err == nil {
		t.Fatal("schema 4 took an update task: the test does not test the migration")
	}
	db.Close()

	inv, err := OpenInventory(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	got, err := inv.Task(ctx, "deploy/r/pc1/win@1")
	if err != nil || got.Kind != "deploy" || got.Version != "v" || got.MAC != mac || got.Base != "" {
		t.Fatalf("task after migration: %+v, %v", got, err)
	}
	if a, err := inv.BootAction(ctx, mac, now); err != nil || a.Action != "deploy" || a.Task != got.ID || a.Version != "v" {
		t.Fatalf("boot action after migration: %+v, %v", a, err)
	}
	var n int
	indexes := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'tasks_by_mac'`
	if inv.db.d == dialectPostgres {
		indexes = `SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'tasks_by_mac'`
	}
	if err := inv.db.QueryRowContext(ctx, indexes).Scan(&n); err != nil || n != 1 {
		t.Fatalf("index tasks_by_mac after migration: %d, %v", n, err)
	}

	base := manifest.BLAKE3.Sum([]byte("v1")).String()
	up := Task{ID: "update/r/pc1/win@2", MAC: mac, Kind: "update", Version: "v2", Base: base}
	// A terminal takes one task at a time: the migrated deploy ends first.
	if _, _, err := inv.FinishTask(ctx, got.ID, TaskDone, "", "", now); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.StartTask(ctx, up, now); err != nil {
		t.Fatal(err)
	}
	if got, err := inv.Task(ctx, up.ID); err != nil || got.Kind != "update" || got.Version != "v2" || got.Base != base {
		t.Fatalf("update task: %+v, %v", got, err)
	}
	if err := inv.SetBootAction(ctx, mac, BootAction{Action: "update", Task: up.ID, Version: "v2", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if a, err := inv.BootAction(ctx, mac, now); err != nil || a.Action != "update" || a.Version != "v2" {
		t.Fatalf("update boot action: %+v, %v", a, err)
	}
}

func TestUpdateTasksNameTheirBase(t *testing.T) { forEachBackend(t, testUpdateTasksNameTheirBase) }

func testUpdateTasksNameTheirBase(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	now := time.Unix(1700000000, 0)
	const mac = "52:54:00:00:00:01"
	inv.Enroll(ctx, mac, "pc1")
	for _, tc := range []struct {
		name string
		task Task
	}{
		{"update without base", Task{ID: "a", MAC: mac, Kind: "update", Version: "v2"}},
		{"deploy with base", Task{ID: "b", MAC: mac, Kind: "deploy", Version: "v2", Base: "v1"}},
		{"unknown kind", Task{ID: "c", MAC: mac, Kind: "format", Version: "v2"}},
	} {
		if _, err := inv.StartTask(ctx, tc.task, now); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	ok := Task{ID: "d", MAC: mac, Kind: "update", Version: "v2", Base: "v1"}
	if _, err := inv.StartTask(ctx, ok, now); err != nil {
		t.Fatal(err)
	}
	ok.Base = "v0"
	if _, err := inv.StartTask(ctx, ok, now); err == nil {
		t.Error("the same update task id with another base was taken")
	}
}

func TestZeroVersionIsUnknown(t *testing.T) { forEachBackend(t, testZeroVersionIsUnknown) }

func testZeroVersionIsUnknown(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	const mac = "52:54:00:00:00:01"
	inv.Enroll(ctx, mac, "pc1")
	v := manifest.BLAKE3.Sum([]byte("v1"))
	if err := inv.SetVersion(ctx, mac, v); err != nil {
		t.Fatal(err)
	}
	if got, _ := inv.Terminal(ctx, mac); got.Version != v {
		t.Fatalf("version %s, want %s", got.Version.Short(), v.Short())
	}
	if err := inv.SetVersion(ctx, mac, manifest.ID{}); err != nil {
		t.Fatal(err)
	}
	got, err := inv.Terminal(ctx, mac)
	if err != nil || !got.Version.IsZero() {
		t.Fatalf("after forgetting: %+v, %v", got, err)
	}
	var col string
	inv.db.QueryRowContext(ctx, `SELECT version FROM terminals WHERE mac = ?`, mac).Scan(&col)
	if col != "" {
		t.Fatalf("the zero id is stored as %q, want empty (unknown)", col)
	}
}
