// Package state keeps the persistent state of tms servers in SQLite (modernc.org/sqlite, no
// cgo): the central catalog of images, versions, regions and verified locations. Schemas are
// versioned migrations applied at open; a database written by a newer tms is refused.
//
//	cat, err := state.OpenCatalog(ctx, "/var/lib/tms/central.db")
//	defer cat.Close()
//	err = cat.UpsertRegion(ctx, state.Region{ID: "lab-1", Labels: map[string]string{"site": "north"}})
//
// Errors for rows that do not exist wrap store.ErrNotFound, the project's "not found".
package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// migration is one step of a schema, applied in a transaction.
type migration struct {
	version int
	sql     string
}

// open opens the SQLite file at path and brings its schema up to date with migrations.
func open(ctx context.Context, path string, migrations []migration) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One writer at a time is what SQLite does anyway; one connection avoids "database is
	// locked" between our own goroutines.
	db.SetMaxOpenConns(1)
	if err := migrate(ctx, db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	return db, nil
}

func migrate(ctx context.Context, db *sql.DB, migrations []migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)`); err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return err
	}
	current := 0
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v], current = true, max(current, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	latest := migrations[len(migrations)-1].version
	if current > latest {
		return fmt.Errorf("schema version %d is newer than this tms knows (%d): use a newer tms", current, latest)
	}
	// Every migration not yet applied is, in order: a database made by a build that had a later
	// migration but not an earlier one (two changes made side by side) still gets both.
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", m.version, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied) VALUES (?, ?)`, m.version, time.Now().UTC().Unix()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
