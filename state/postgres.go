package state

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// openPostgres opens the PostgreSQL database at the URL dsn. An unreachable server is retried
// with backoff for o.connectTimeout, each failure logged with the host; then it fails naming
// the host and the cause. The password is never logged nor put in an error.
func openPostgres(ctx context.Context, dsn string, o options) (*database, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors may quote the string: say only which one.
		return nil, fmt.Errorf("PostgreSQL URL %s: not a valid connection URL", RedactDSN(dsn))
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	sdb := stdlib.OpenDB(*cfg)
	sdb.SetMaxOpenConns(o.maxConns)
	sdb.SetMaxIdleConns(o.maxConns)
	sdb.SetConnMaxIdleTime(5 * time.Minute)
	d := &database{raw: sdb, d: dialectPostgres, where: where}

	start := time.Now()
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, min(10*time.Second, o.connectTimeout))
		err = sdb.PingContext(pctx)
		cancel()
		if err == nil {
			return d, nil
		}
		if ctx.Err() != nil {
			sdb.Close()
			return nil, ctx.Err()
		}
		if !isConnError(err) {
			// Refused for a reason retrying does not change: a wrong password, no such
			// database.
			sdb.Close()
			return nil, fmt.Errorf("PostgreSQL at %s: %w", where, err)
		}
		left := o.connectTimeout - time.Since(start)
		if left <= 0 {
			sdb.Close()
			return nil, &UnreachableError{Where: where, Err: fmt.Errorf("tried %d times for %s: %w", attempt, time.Since(start).Round(time.Millisecond), err)}
		}
		wait = min(wait, left)
		o.logger.Warn("PostgreSQL unreachable; retrying", "host", where, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			sdb.Close()
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// err says plainly that PostgreSQL was unreachable when err is a lost or refused connection
// (the call may be retried: database/sql opens a new connection next time). Other errors are
// returned as they are.
func (d *database) err(err error) error {
	if err == nil || d.d != dialectPostgres || !isConnError(err) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // a cancelled call's error comes back as it is
	}
	return &UnreachableError{Where: d.where, Err: err}
}

// UnreachableError says a PostgreSQL database could not be reached, or its connection was lost
// during a call: nothing of the call's transaction was kept, and a later call may succeed.
type UnreachableError struct {
	Where string // host:port/database
	Err   error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("PostgreSQL at %s unreachable (connection refused or lost; retry once it is back): %v", e.Where, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// isConnError reports an error of the connection rather than of the query: refused, reset,
// closed, or the server shutting down.
func isConnError(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		var pe *pgconn.PgError
		// A server that answered and refused (auth, no such database) is not unreachable,
		// unless it is starting or stopping.
		if errors.As(err, &pe) {
			return pgConnClass(pe.Code)
		}
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgConnClass(pe.Code)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

// pgConnClass reports SQLSTATEs of a connection going away: class 08 (connection exception),
// 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now.
func pgConnClass(code string) bool {
	return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03"
}

// RedactDSN returns a database string fit for a log: a PostgreSQL URL's password (in the
// user info or a password parameter) replaced by xxxxx. A SQLite path is returned as is.
func RedactDSN(name string) string {
	if !IsPostgres(name) {
		return name
	}
	u, err := url.Parse(name)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
