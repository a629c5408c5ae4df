package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"tms/state"
)

// Database names a server's state database: empty for the SQLite file in the server's
// data_dir (the default), a file path (or sqlite:PATH) for a SQLite file elsewhere, or a
// postgres:// (postgresql://) URL for PostgreSQL, which several servers of one region share.
// The URL may hold a password (prefer the configuration file or the environment to a flag).
//
// String, GoString and MarshalJSON redact the password; Value is the string to open.
type Database string

// Value is the database string as configured, password included: for opening only.
func (d Database) Value() string { return string(d) }

// IsPostgres tells whether d names a PostgreSQL database, as the state package decides it.
func (d Database) IsPostgres() bool { return state.IsPostgres(string(d)) }

// String is d with a PostgreSQL URL's password replaced by xxxxx: fit for a log.
func (d Database) String() string { return state.RedactDSN(string(d)) }

// GoString is String for %#v.
func (d Database) GoString() string { return fmt.Sprintf("config.Database(%q)", d.String()) }

// MarshalJSON encodes d without its password (slog's JSON handler uses it).
func (d Database) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Bounds of *.database_connect_timeout.
const (
	minConnectTimeout = time.Second
	maxConnectTimeout = time.Hour
)

// database checks a database string (key) and how long opening it may retry (timeoutKey).
func (v *validator) database(key string, d Database, timeoutKey string, timeout time.Duration) {
	if timeout != 0 && (timeout < minConnectTimeout || timeout > maxConnectTimeout) {
		v.add(timeoutKey, fmt.Sprintf("%s is not between %s and %s", timeout, minConnectTimeout, maxConnectTimeout))
	}
	s := string(d)
	switch {
	case s == "":
		return
	case d.IsPostgres():
		u, err := url.Parse(s)
		switch {
		case err != nil:
			v.add(key, fmt.Sprintf("%s is not a valid postgres:// URL", d))
		case u.Host == "" || u.Hostname() == "":
			v.add(key, fmt.Sprintf("%s has no host: use postgres://user:password@host:5432/database", d))
		case strings.Trim(u.Path, "/") == "":
			v.add(key, fmt.Sprintf("%s names no database: use postgres://user:password@host:5432/database", d))
		case u.Fragment != "":
			v.add(key, fmt.Sprintf("%s: a database URL has no fragment", d))
		}
	case strings.HasPrefix(s, "sqlite:"):
		if strings.TrimPrefix(s, "sqlite:") == "" {
			v.add(key, "sqlite: names no file: use sqlite:/path/to/file.db")
		}
	case strings.Contains(s, "://"):
		what := "this URL"
		if u, err := url.Parse(s); err == nil && u.Scheme != "" {
			what = "a " + u.Scheme + ":// URL" // url.Parse allows letters, digits, +, - and . only
		}
		v.add(key, what+" is neither a file path nor a postgres:// URL")
	}
}
