package state

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"testing"
)

// cutRows is a driver whose every query answers one row, then loses the connection: what a
// PostgreSQL server that goes away while a result set streams looks like to database/sql.
type cutRows struct{}

func (cutRows) Open(string) (driver.Conn, error) { return cutConn{}, nil }

type cutConn struct{}

func (cutConn) Prepare(string) (driver.Stmt, error) { return cutStmt{}, nil }
func (cutConn) Close() error                        { return nil }
func (cutConn) Begin() (driver.Tx, error)           { return nil, errors.New("no transactions") }

type cutStmt struct{}

func (cutStmt) Close() error                               { return nil }
func (cutStmt) NumInput() int                              { return -1 }
func (cutStmt) Exec([]driver.Value) (driver.Result, error) { return nil, errors.New("no exec") }
func (cutStmt) Query([]driver.Value) (driver.Rows, error)  { return &cutResult{}, nil }

type cutResult struct{ sent bool }

func (*cutResult) Columns() []string { return []string{"mac"} }
func (*cutResult) Close() error      { return nil }
func (r *cutResult) Next(dest []driver.Value) error {
	if r.sent {
		return io.ErrUnexpectedEOF
	}
	r.sent, dest[0] = true, "52:54:00:00:00:01"
	return nil
}

func init() { sql.Register("tms-cut-rows", cutRows{}) }

// A connection lost while rows are read is an UnreachableError, as one lost before the query
// answered is: callers retry both the same way.
func TestLostConnectionWhileReadingRowsIsUnreachable(t *testing.T) {
	raw, err := sql.Open("tms-cut-rows", "")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	d := &database{raw: raw, d: dialectPostgres, where: "db.example:5432/inventory"}
	rows, err := d.QueryContext(context.Background(), `SELECT mac FROM terminals`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var mac string
		if err := rows.Scan(&mac); err != nil {
			t.Fatal(err)
		}
		n++
	}
	var ue *UnreachableError
	if err := rows.Err(); n != 1 || !errors.As(err, &ue) || ue.Where != d.where {
		t.Fatalf("%d rows, then %v (want one row, then an UnreachableError)", n, err)
	}
}
