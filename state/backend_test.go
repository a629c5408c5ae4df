package state

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tms/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// forEachBackend runs test once on SQLite and once on PostgreSQL, as subtests named sqlite and
// postgres; testDB gives each the database of its backend. Without PostgreSQL's binaries the
// postgres subtest is skipped, saying so.
func forEachBackend(t *testing.T, test func(t *testing.T)) {
	t.Helper()
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, test)
	}
}

// backendOf is the backend a forEachBackend subtest runs on.
func backendOf(t testing.TB) dialect {
	for _, part := range strings.Split(t.Name(), "/") {
		if part == "postgres" {
			return dialectPostgres
		}
	}
	return dialectSQLite
}

// testDB returns a fresh database for the test's backend: a SQLite file called name in a
// temporary directory, or a new PostgreSQL database.
func testDB(t testing.TB, name string) string {
	t.Helper()
	if backendOf(t) == dialectPostgres {
		return pgtest.DSN(t)
	}
	return filepath.Join(t.TempDir(), name)
}

// rawExec runs query on database (as testDB returned it) through database/sql directly, past
// the state package: what an older or newer tms, or an admin, might have written.
func rawExec(t testing.TB, database, query string) {
	t.Helper()
	driver, dsn := "sqlite", database
	if IsPostgres(database) {
		driver = "pgx"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}
