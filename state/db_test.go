package state

import (
	"context"
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
