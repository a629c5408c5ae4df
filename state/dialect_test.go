package state

import "testing"

func TestDialectRewritesQueriesForPostgres(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"placeholders numbered", `SELECT a FROM t WHERE b = ? AND c IN (?, ?)`, `SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)`},
		{"a ? in a string is text", `SELECT '?' || x FROM t WHERE y = ?`, `SELECT '?' || x FROM t WHERE y = $1`},
		{"a doubled quote stays in its string", `SELECT 'it''s ?' FROM t WHERE y = ?`, `SELECT 'it''s ?' FROM t WHERE y = $1`},
		{"a ? in a comment is text", "-- why?\nSELECT ?", "-- why?\nSELECT $1"},
		{"insert or ignore", `INSERT OR IGNORE INTO group_members (grp, mac) VALUES (?, ?)`, `INSERT INTO group_members (grp, mac) VALUES ($1, $2) ON CONFLICT DO NOTHING`},
		{"two-argument max is GREATEST", `SET x = max(t.x, excluded.x)`, `SET x = GREATEST(t.x, excluded.x)`},
		{"two-argument min is LEAST", `SELECT min(a, (b))`, `SELECT LEAST(a, (b))`},
		{"aggregate max stays", `SELECT max(created) FROM t`, `SELECT max(created) FROM t`},
		{"aggregate of a call stays", `SELECT max(coalesce(a, b)) FROM t`, `SELECT max(coalesce(a, b)) FROM t`},
		{"a column named like a function stays", `SELECT maximum FROM t`, `SELECT maximum FROM t`},
		{"for update kept", `SELECT a FROM t WHERE b = ? FOR UPDATE`, `SELECT a FROM t WHERE b = $1 FOR UPDATE`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := dialectPostgres.query(c.in); got != c.want {
				t.Errorf("\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestDialectLeavesSQLiteQueriesButForUpdate(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`INSERT OR IGNORE INTO g (a) VALUES (?)`, `INSERT OR IGNORE INTO g (a) VALUES (?)`},
		{`SELECT a FROM t WHERE b = ? FOR UPDATE`, `SELECT a FROM t WHERE b = ?`},
		{"SELECT a FROM t\n\t\tFOR UPDATE\n", `SELECT a FROM t`},
	} {
		if got := dialectSQLite.query(c.in); got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDialectRewritesSchemaTypes(t *testing.T) {
	in := "CREATE TABLE t (\n\ta INTEGER NOT NULL DEFAULT 0, -- an INTEGER\n\tb BLOB,\n\tc TEXT DEFAULT 'INTEGER',\n\tinteger_count INTEGER\n);"
	want := "CREATE TABLE t (\n\ta BIGINT NOT NULL DEFAULT 0, -- an INTEGER\n\tb BYTEA,\n\tc TEXT DEFAULT 'INTEGER',\n\tinteger_count BIGINT\n);"
	if got := dialectPostgres.schema(in); got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	if got := dialectSQLite.schema(in); got != in {
		t.Errorf("SQLite's schema changed: %s", got)
	}
}
