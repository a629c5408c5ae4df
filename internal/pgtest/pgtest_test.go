package pgtest

import (
	"context"
	"database/sql"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// Each test's database is its own: a table made in one is not in another.
func TestDSNGivesSeparateDatabases(t *testing.T) {
	ctx := context.Background()
	a, b := DSN(t), DSN(t)
	if a == b {
		t.Fatalf("two databases share the DSN %s", a)
	}
	da, err := sql.Open("pgx", a)
	if err != nil {
		t.Fatal(err)
	}
	defer da.Close()
	db, err := sql.Open("pgx", b)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := da.ExecContext(ctx, `CREATE TABLE x (y BIGINT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `SELECT y FROM x`); err == nil {
		t.Error("a table made in one test database shows in another")
	}
}

// A stopped cluster refuses connections; restarted, it serves the rows written before.
func TestStopRestartKeepsRows(t *testing.T) {
	ctx := context.Background()
	c := Start(t)
	dsn := c.NewDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE x (y BIGINT); INSERT INTO x VALUES (7)`); err != nil {
		t.Fatal(err)
	}
	c.Stop(t)
	if err := db.PingContext(ctx); err == nil {
		t.Error("a stopped cluster answered")
	}
	c.Restart(t)
	var y int64
	if err := db.QueryRowContext(ctx, `SELECT y FROM x`).Scan(&y); err != nil || y != 7 {
		t.Errorf("after restart: %d, %v; want 7", y, err)
	}
}
