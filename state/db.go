// Package state keeps the persistent state of tms servers in SQLite (modernc.org/sqlite, no
// cgo) or PostgreSQL (pgx): the central catalog of images, versions, regions and verified
// locations, and each region's inventory. Schemas are versioned migrations applied at open; a
// database written by a newer tms is refused.
//
//	cat, err := state.OpenCatalog(ctx, "/var/lib/tms/central.db")
//	defer cat.Close()
//	err = cat.UpsertRegion(ctx, state.Region{ID: "lab-1", Labels: map[string]string{"site": "north"}})
//
// The database string picks the backend: a file path (or sqlite:PATH) is SQLite; a
// postgres:// or postgresql:// URL is PostgreSQL, which several servers of one region may share
// (docs/state.md says how each write stays right under concurrent writers).
//
// Errors for rows that do not exist wrap store.ErrNotFound, the project's "not found".
package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// migration is one step of a schema, applied in a transaction.
type migration struct {
	version int
	sql     string
	// postgres is the step in PostgreSQL's words, for a step SQLite says in its own way
	// (triggers, table rebuilds); "" means sql is portable and PostgreSQL runs it with its column
	// types rewritten (INTEGER → BIGINT, BLOB → BYTEA).
	postgres string
}

// text is m for dialect d.
func (m migration) text(d dialect) string {
	if d == dialectPostgres && m.postgres != "" {
		return m.postgres
	}
	return d.schema(m.sql)
}

// Option adjusts how a database is opened.
type Option func(*options)

type options struct {
	logger         *slog.Logger
	connectTimeout time.Duration
	maxConns       int
}

// DefaultConnectTimeout is how long opening a PostgreSQL database retries an unreachable server.
const DefaultConnectTimeout = time.Minute

// WithLogger logs what opening does that an admin should know of (PostgreSQL not reachable
// yet, retried) to l.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithConnectTimeout bounds how long opening a PostgreSQL database retries an unreachable
// server before it fails (DefaultConnectTimeout if d <= 0).
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) { o.connectTimeout = d }
}

// WithMaxConns bounds a PostgreSQL database's connection pool (10 if n <= 0). SQLite keeps one.
func WithMaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// open opens the database named by database (a SQLite file path, sqlite:PATH, or a
// postgres:// URL) and brings its schema up to date with migrations.
func open(ctx context.Context, name string, migrations []migration, opts ...Option) (*database, error) {
	o := options{logger: slog.New(slog.DiscardHandler), connectTimeout: DefaultConnectTimeout, maxConns: 10}
	for _, f := range opts {
		f(&o)
	}
	if o.connectTimeout <= 0 {
		o.connectTimeout = DefaultConnectTimeout
	}
	if o.maxConns <= 0 {
		o.maxConns = 10
	}
	var (
		d   *database
		err error
	)
	if IsPostgres(name) {
		d, err = openPostgres(ctx, name, o)
	} else {
		d, err = openSQLite(name)
	}
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, d, migrations); err != nil {
		d.Close()
		return nil, fmt.Errorf("database %s: %w", d.where, err)
	}
	return d, nil
}

// IsPostgres reports whether database names a PostgreSQL database (a postgres:// or
// postgresql:// URL) rather than a SQLite file.
func IsPostgres(name string) bool {
	return strings.HasPrefix(name, "postgres://") || strings.HasPrefix(name, "postgresql://")
}

func openSQLite(name string) (*database, error) {
	path := strings.TrimPrefix(name, "sqlite:")
	if path == "" {
		return nil, errors.New("no database: give a SQLite file path or a postgres:// URL")
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)"
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One writer at a time is what SQLite does anyway; one connection avoids "database is
	// locked" between our own goroutines.
	sdb.SetMaxOpenConns(1)
	return &database{raw: sdb, d: dialectSQLite, where: path}, nil
}

// migrationLock is the PostgreSQL advisory lock a migration holds, so that servers starting
// at once migrate one after the other ("tms" in ASCII, then "schema").
const migrationLock = 0x746d73_736368

func migrate(ctx context.Context, d *database, migrations []migration) error {
	// Every migration not yet applied is, in order: a database made by a build that had a later
	// migration but not an earlier one (two changes made side by side) still gets both. Each
	// runs in its own transaction, which on PostgreSQL first takes migrationLock and then
	// looks again at what is applied: another server may have just done it.
	for {
		done, err := migrateOne(ctx, d, migrations)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the first migration not yet applied; done is true when there was none.
func migrateOne(ctx context.Context, d *database, migrations []migration) (done bool, err error) {
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if d.d == dialectPostgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(migrationLock)); err != nil {
			return false, fmt.Errorf("waiting for the migration lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, d.d.schema(`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)`)); err != nil {
		return false, err
	}
	applied := map[int]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return false, err
	}
	current := 0
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return false, err
		}
		applied[v], current = true, max(current, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	latest := migrations[len(migrations)-1].version
	if current > latest {
		return false, fmt.Errorf("schema version %d is newer than this tms knows (%d): use a newer tms", current, latest)
	}
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.text(d.d)); err != nil {
			return false, fmt.Errorf("migration %d: %w", m.version, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied) VALUES (?, ?)`, m.version, time.Now().UTC().Unix()); err != nil {
			return false, err
		}
		return false, tx.Commit()
	}
	return true, tx.Commit()
}

// db is a database and its dialect. Its methods are database/sql's, with each query rewritten
// for the dialect (once: the rewrite is kept) and, on PostgreSQL, a lost connection said
// plainly. Queries are written as SQLite's (see dialect).
type database struct {
	raw   *sql.DB
	d     dialect
	where string // the file, or PostgreSQL's host:port/database; never a password

	queries sync.Map     // query → query for d
	cached  atomic.Int64 // entries in queries
}

// maxCachedQueries bounds the rewrites a database keeps. The package's queries are a few
// hundred texts built from constants; past the bound a query is rewritten on every call.
const maxCachedQueries = 4096

func (d *database) q(query string) string {
	if d.d == dialectSQLite && !strings.Contains(query, "FOR UPDATE") {
		return query
	}
	if v, ok := d.queries.Load(query); ok {
		return v.(string)
	}
	r := d.d.query(query)
	if d.cached.Load() < maxCachedQueries {
		if _, loaded := d.queries.LoadOrStore(query, r); !loaded {
			d.cached.Add(1)
		}
	}
	return r
}

// args converts Go values the schema stores otherwise: a bool is an INTEGER 0 or 1 in both
// databases (PostgreSQL will not take a bool for a BIGINT).
func (d *database) args(args []any) []any {
	if d.d != dialectPostgres {
		return args
	}
	var out []any
	for i, a := range args {
		if b, ok := a.(bool); ok {
			if out == nil {
				out = append([]any(nil), args...)
			}
			out[i] = int64(boolInt(b))
		}
	}
	if out == nil {
		return args
	}
	return out
}

// Close closes the database.
func (d *database) Close() error { return d.raw.Close() }

// ExecContext is sql.DB's, with query in d's dialect.
func (d *database) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	r, err := d.raw.ExecContext(ctx, d.q(query), d.args(args)...)
	return r, d.err(err)
}

// QueryContext is sql.DB's, with query in d's dialect.
func (d *database) QueryContext(ctx context.Context, query string, args ...any) (*dbRows, error) {
	r, err := d.raw.QueryContext(ctx, d.q(query), d.args(args)...)
	if err != nil {
		return nil, d.err(err)
	}
	return &dbRows{r, d}, nil
}

// QueryRowContext is sql.DB's, with query in d's dialect.
func (d *database) QueryRowContext(ctx context.Context, query string, args ...any) *dbRow {
	return &dbRow{d.raw.QueryRowContext(ctx, d.q(query), d.args(args)...), d}
}

// Exec, Query and QueryRow are for tests.
func (d *database) Exec(query string, args ...any) (sql.Result, error) {
	return d.ExecContext(context.Background(), query, args...)
}

func (d *database) QueryRow(query string, args ...any) *dbRow {
	return d.QueryRowContext(context.Background(), query, args...)
}

// BeginTx is sql.DB's; the transaction's queries are in d's dialect.
func (d *database) BeginTx(ctx context.Context, opts *sql.TxOptions) (*dbTx, error) {
	t, err := d.raw.BeginTx(ctx, opts)
	if err != nil {
		return nil, d.err(err)
	}
	return &dbTx{t, d}, nil
}

// tx is a transaction of a db.
type dbTx struct {
	raw *sql.Tx
	d   *database
}

func (t *dbTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	r, err := t.raw.ExecContext(ctx, t.d.q(query), t.d.args(args)...)
	return r, t.d.err(err)
}

func (t *dbTx) QueryContext(ctx context.Context, query string, args ...any) (*dbRows, error) {
	r, err := t.raw.QueryContext(ctx, t.d.q(query), t.d.args(args)...)
	if err != nil {
		return nil, t.d.err(err)
	}
	return &dbRows{r, t.d}, nil
}

func (t *dbTx) QueryRowContext(ctx context.Context, query string, args ...any) *dbRow {
	return &dbRow{t.raw.QueryRowContext(ctx, t.d.q(query), t.d.args(args)...), t.d}
}

// lock serializes transactions that name the same lock, across every server sharing a
// PostgreSQL database, until this one ends (pg_advisory_xact_lock). On SQLite, with one
// connection and one process, a transaction already has the database to itself: a no-op.
func (t *dbTx) lock(ctx context.Context, name string) error {
	if t.d.d != dialectPostgres {
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte("tms state " + name))
	if _, err := t.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("waiting for the %s lock: %w", name, err)
	}
	return nil
}

func (t *dbTx) Commit() error   { return t.d.err(t.raw.Commit()) }
func (t *dbTx) Rollback() error { return t.raw.Rollback() }

// row is sql.Row's, with a lost connection said plainly.
type dbRow struct {
	raw *sql.Row
	d   *database
}

func (r *dbRow) Scan(dest ...any) error { return r.d.err(r.raw.Scan(dest...)) }

// dbRows is sql.Rows, with a connection lost while the rows are read said plainly, as for the
// query itself.
type dbRows struct {
	*sql.Rows
	d *database
}

func (r *dbRows) Scan(dest ...any) error { return r.d.err(r.Rows.Scan(dest...)) }
func (r *dbRows) Err() error             { return r.d.err(r.Rows.Err()) }
