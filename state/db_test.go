package state

import (
	"context"
	"fmt"
	"testing"
)

// A database made by a build that had migration 3 but not 2 (two changes made side by side,
// merged in another order) gets 2 when a build with both opens it.
func TestMigrateAppliesEveryMissingMigration(t *testing.T) {
	forEachBackend(t, testMigrateAppliesEveryMissingMigration)
}

func testMigrateAppliesEveryMissingMigration(t *testing.T) {
	ctx := context.Background()
	path := testDB(t, "db")
	one := migration{version: 1, sql: `CREATE TABLE a (x INTEGER)`}
	two := migration{version: 2, sql: `CREATE TABLE b (x INTEGER)`}
	three := migration{version: 3, sql: `CREATE TABLE c (x INTEGER)`}
	db, err := open(ctx, path, []migration{one, three})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = open(ctx, path, []migration{one, two, three})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, table := range []string{"a", "b", "c"} {
		if _, err := db.ExecContext(ctx, "INSERT INTO "+table+" VALUES (1)"); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
	if _, err := open(ctx, path, []migration{one, two}); err == nil {
		t.Error("a database of schema 3 was opened by a build that knows 2")
	}
}

// A database at every older schema (the first n migrations, as an older tms left it, with a
// row in it) is brought up to date by this tms, the row kept.
func TestEveryOlderSchemaIsBroughtUpToDate(t *testing.T) {
	forEachBackend(t, testEveryOlderSchemaIsBroughtUpToDate)
}

func testEveryOlderSchemaIsBroughtUpToDate(t *testing.T) {
	ctx := context.Background()
	for n := 1; n < len(inventoryMigrations); n++ {
		t.Run(fmt.Sprintf("inventory at %d", inventoryMigrations[n-1].version), func(t *testing.T) {
			path := testDB(t, "inventory.db")
			old, err := open(ctx, path, inventoryMigrations[:n])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := old.Exec(`INSERT INTO terminals (mac, name, enrolled, last_seen) VALUES ('52:54:00:00:00:01', 'pc1', 1, 5)`); err != nil {
				t.Fatal(err)
			}
			old.Close()
			inv, err := OpenInventory(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer inv.Close()
			if got, err := inv.Terminal(ctx, "pc1"); err != nil || got.MAC != "52:54:00:00:00:01" || !got.Enrolled || got.LastSeen.UnixNano() != 5 {
				t.Errorf("terminal after migrating: %+v, %v", got, err)
			}
		})
	}
	for n := 1; n < len(catalogMigrations); n++ {
		t.Run(fmt.Sprintf("catalog at %d", catalogMigrations[n-1].version), func(t *testing.T) {
			path := testDB(t, "catalog.db")
			old, err := open(ctx, path, catalogMigrations[:n])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := old.Exec(`INSERT INTO regions (id, capacity) VALUES ('lab-1', 7)`); err != nil {
				t.Fatal(err)
			}
			old.Close()
			c, err := OpenCatalog(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got, err := c.GetRegion(ctx, "lab-1"); err != nil || got.Capacity != 7 {
				t.Errorf("region after migrating: %+v, %v", got, err)
			}
		})
	}
}
