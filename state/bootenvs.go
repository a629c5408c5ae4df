package state

import (
	"context"
	"fmt"
	"time"
)

// bootEnvsMigration (15) records, beside the catalog's versions, what central knows of the
// versions of the in-memory OS published to it (tms bootenv publish).
var bootEnvsMigration = migration{version: 15, sql: `
CREATE TABLE bootenvs (
	version        TEXT PRIMARY KEY,
	name           TEXT NOT NULL,
	kernel_version TEXT NOT NULL DEFAULT '',
	agent_version  TEXT NOT NULL DEFAULT '',
	published      BIGINT NOT NULL,
	published_by   TEXT NOT NULL DEFAULT ''
);
`}

// BootEnv is a published version of the in-memory OS as central records it.
type BootEnv struct {
	Version       string
	Name          string
	KernelVersion string
	AgentVersion  string
	Published     time.Time
	PublishedBy   string
}

// maxBootEnvField bounds the text fields of a BootEnv.
const maxBootEnvField = 256

// RecordBootEnv records a published version of the in-memory OS; recording it again changes
// nothing.
func (c *Catalog) RecordBootEnv(ctx context.Context, b BootEnv) error {
	for _, f := range []string{b.Version, b.Name, b.KernelVersion, b.AgentVersion, b.PublishedBy} {
		if len(f) > maxBootEnvField {
			return fmt.Errorf("bootenv %.12s: a field longer than %d bytes", b.Version, maxBootEnvField)
		}
	}
	if b.Version == "" || b.Name == "" || b.Published.IsZero() {
		return fmt.Errorf("bootenv %q: version, name and publication time are required", b.Version)
	}
	_, err := c.db.ExecContext(ctx, `INSERT INTO bootenvs (version, name, kernel_version, agent_version, published, published_by)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (version) DO NOTHING`,
		b.Version, b.Name, b.KernelVersion, b.AgentVersion, b.Published.UTC().UnixNano(), b.PublishedBy)
	if err != nil {
		return fmt.Errorf("bootenv %.12s: %w", b.Version, err)
	}
	return nil
}

// BootEnvs lists the published versions of the in-memory OS, newest first.
func (c *Catalog) BootEnvs(ctx context.Context) ([]BootEnv, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT version, name, kernel_version, agent_version, published, published_by FROM bootenvs ORDER BY published DESC, version`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BootEnv
	for rows.Next() {
		var b BootEnv
		var at int64
		if err := rows.Scan(&b.Version, &b.Name, &b.KernelVersion, &b.AgentVersion, &at, &b.PublishedBy); err != nil {
			return nil, err
		}
		b.Published = time.Unix(0, at).UTC()
		out = append(out, b)
	}
	return out, rows.Err()
}
