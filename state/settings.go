package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"tms/store"
)

// Run-time settings central pushed (tms region config set). The region keeps its overrides in
// its own database and applies them over its configuration file's values when it starts, so a
// restart keeps them; central keeps the last value each region applied, so that it can say what
// a region runs with while the region is offline. Values are validated by package settings
// before they get here; these tables only bound their size.

var settingsMigration = migration{version: 9, sql: `
-- Overrides of the region's run-time settings, pushed by central (ConfigureRegion).
CREATE TABLE settings (
	key    TEXT PRIMARY KEY,
	value  TEXT NOT NULL,
	set_at INTEGER NOT NULL,
	set_by TEXT NOT NULL DEFAULT '',
	task   TEXT NOT NULL DEFAULT ''
);
`}

var regionSettingsMigration = migration{version: 4, sql: `
-- The run-time settings each region last applied (ConfigureRegion records them).
CREATE TABLE region_settings (
	region TEXT NOT NULL REFERENCES regions (id) ON DELETE CASCADE,
	key    TEXT NOT NULL,
	value  TEXT NOT NULL,
	set_at INTEGER NOT NULL,
	set_by TEXT NOT NULL DEFAULT '',
	task   TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (region, key)
);
`}

// Bounds of a stored setting's fields.
const (
	maxSettingKey   = 64
	maxSettingValue = 128
	maxSettingBy    = 256
	maxSettingTask  = 1000
)

// Setting is a run-time setting's value as pushed: who set it, when, by which task.
type Setting struct {
	Key   string
	Value string
	SetAt time.Time
	SetBy string
	Task  string
}

func (s Setting) check() error {
	switch {
	case s.Key == "" || len(s.Key) > maxSettingKey:
		return fmt.Errorf("setting key %q: want 1 to %d bytes", s.Key, maxSettingKey)
	case len(s.Value) > maxSettingValue:
		return fmt.Errorf("setting %s: a value of %d bytes, at most %d", s.Key, len(s.Value), maxSettingValue)
	case len(s.SetBy) > maxSettingBy || len(s.Task) > maxSettingTask:
		return fmt.Errorf("setting %s: who set it or the task is too long", s.Key)
	case s.SetAt.IsZero():
		return fmt.Errorf("setting %s: no time it was set", s.Key)
	}
	return nil
}

// SetSetting records an override of a run-time setting, replacing any earlier one.
func (inv *Inventory) SetSetting(ctx context.Context, s Setting) error {
	if err := s.check(); err != nil {
		return err
	}
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO settings (key, value, set_at, set_by, task) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, set_at = excluded.set_at, set_by = excluded.set_by, task = excluded.task`,
		s.Key, s.Value, s.SetAt.UTC().UnixNano(), s.SetBy, s.Task)
	if err != nil {
		return fmt.Errorf("setting %s: %w", s.Key, err)
	}
	// The region's other servers reload the settings when this counter moves.
	if _, err := tx.ExecContext(ctx, `UPDATE settings_version SET n = n + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("setting %s: %w", s.Key, err)
	}
	return tx.Commit()
}

// Settings returns the overrides, by key.
func (inv *Inventory) Settings(ctx context.Context) ([]Setting, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT key, value, set_at, set_by, task FROM settings ORDER BY key`)
	if err != nil {
		return nil, err
	}
	return scanSettings(rows)
}

// SetRegionSetting records the value a region applied for a run-time setting. For the time
// zone it also updates the region's descriptor, which schedules and --at read. A region
// central does not know is not found.
func (c *Catalog) SetRegionSetting(ctx context.Context, region string, s Setting, zone bool) error {
	if err := s.check(); err != nil {
		return err
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO region_settings (region, key, value, set_at, set_by, task) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (region, key) DO UPDATE SET value = excluded.value, set_at = excluded.set_at, set_by = excluded.set_by, task = excluded.task`,
		region, s.Key, s.Value, s.SetAt.UTC().UnixNano(), s.SetBy, s.Task)
	if isForeignKey(err) {
		return notFound("region " + region)
	}
	if err != nil {
		return fmt.Errorf("region %s: setting %s: %w", region, s.Key, err)
	}
	if zone {
		if _, err := time.LoadLocation(s.Value); err != nil || s.Value == "" || s.Value == "Local" {
			return fmt.Errorf("region %s: time zone %q is not an IANA zone name like Europe/Berlin", region, s.Value)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE regions SET timezone = ? WHERE id = ?`, s.Value, region); err != nil {
			return fmt.Errorf("region %s: time zone: %w", region, err)
		}
	}
	return tx.Commit()
}

// RegionSettings returns the run-time settings region last applied, by key.
func (c *Catalog) RegionSettings(ctx context.Context, region string) ([]Setting, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT key, value, set_at, set_by, task FROM region_settings WHERE region = ? ORDER BY key`, region)
	if err != nil {
		return nil, err
	}
	return scanSettings(rows)
}

func scanSettings(rows interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}) ([]Setting, error) {
	defer rows.Close()
	var out []Setting
	for rows.Next() {
		var s Setting
		var at int64
		if err := rows.Scan(&s.Key, &s.Value, &at, &s.SetBy, &s.Task); err != nil {
			return nil, err
		}
		s.SetAt = time.Unix(0, at).UTC()
		out = append(out, s)
	}
	return out, errors.Join(rows.Err())
}

// SettingBootEnv is the key under which the settings table holds the region's current version
// of the in-memory OS (tms bootenv rollout sets it once a canary booted it): every server of the
// region serves that version to terminals that have no override. It is not a run-time setting
// of package settings: only a rollout sets it, never tms region config set.
const SettingBootEnv = "bootenv"

// CurrentBootEnv returns the region's current version of the in-memory OS as its setting
// holds it (SettingBootEnv): a zero Setting when the region has none (its terminals boot the
// plain boot directory).
func (inv *Inventory) CurrentBootEnv(ctx context.Context) (Setting, error) {
	s, err := inv.Setting(ctx, SettingBootEnv)
	if errors.Is(err, store.ErrNotFound) {
		return Setting{}, nil
	}
	return s, err
}

// Setting returns the override stored under key; store.ErrNotFound if there is none.
func (inv *Inventory) Setting(ctx context.Context, key string) (Setting, error) {
	var s Setting
	var at int64
	err := inv.db.QueryRowContext(ctx, `SELECT key, value, set_at, set_by, task FROM settings WHERE key = ?`, key).Scan(&s.Key, &s.Value, &at, &s.SetBy, &s.Task)
	if errors.Is(err, sql.ErrNoRows) {
		return s, notFound("setting " + key)
	}
	if err != nil {
		return s, fmt.Errorf("setting %s: %w", key, err)
	}
	s.SetAt = time.Unix(0, at).UTC()
	return s, nil
}
