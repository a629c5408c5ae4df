package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// A region may run several `tms region` servers on one shared inventory database (the same
// region id, one Temporal task queue, a store each). Each server records itself in the
// servers table and heartbeats there; the others read the table to know who is healthy (who
// answers which terminal's network boot: package choose). A stopped or killed server is never
// removed: it goes stale.
//
// The SQL here stays portable (TEXT and BIGINT, times as Unix nanoseconds, ON CONFLICT) so the
// same statements run on SQLite and PostgreSQL.

var serversMigration = migration{version: 11, sql: `
-- The region's servers (tms region processes sharing this database), one row per server id.
CREATE TABLE servers (
	id        TEXT PRIMARY KEY,
	labels    TEXT NOT NULL DEFAULT '{}',
	endpoint  TEXT NOT NULL DEFAULT '',
	boot_addr TEXT NOT NULL DEFAULT '',
	dhcp      TEXT NOT NULL DEFAULT '',
	version   TEXT NOT NULL DEFAULT '',
	bootenv   TEXT NOT NULL DEFAULT '',
	started   BIGINT NOT NULL,
	last_seen BIGINT NOT NULL
);
-- A counter every change of the settings table moves: the servers poll it with their
-- heartbeat and reload the settings when it moved (one server applies central's push, all
-- of them must run with it).
CREATE TABLE settings_version (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	n  BIGINT NOT NULL
);
INSERT INTO settings_version (id, n) VALUES (1, 0);
`}

var groupLabelsMigration = migration{version: 12, sql: `
-- Location labels of a group (room=a): the region's servers whose labels include a terminal's
-- groups' labels answer its network boot first.
CREATE TABLE group_labels (
	grp   TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
	key   TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (grp, key)
);
`}

// DefaultHeartbeat is how often a region's server records that it is alive; a server whose
// last heartbeat is older than StaleHeartbeats of them is stale.
const DefaultHeartbeat = 5 * time.Second

// StaleHeartbeats is how many heartbeats a server may miss before it counts as stale.
const StaleHeartbeats = 3

// StaleAfter is how long after its last heartbeat a server heartbeating every interval goes
// stale (DefaultHeartbeat if interval is not positive).
func StaleAfter(interval time.Duration) time.Duration {
	if interval <= 0 {
		interval = DefaultHeartbeat
	}
	return StaleHeartbeats * interval
}

// Bounds of a server's record and of labels.
const (
	MaxLabels        = 16
	maxServerField   = 512
	MaxServersListed = 64
)

// Server is one of a region's servers as the registry records it.
type Server struct {
	ID       string
	Labels   map[string]string
	Endpoint string // the agent and data URL, http(s)://host:port
	BootAddr string // the boot service's address on the terminals' segment; empty without one
	// DHCP is the boot service's DHCP mode (proxy, full, off); empty without a boot service.
	DHCP    string
	Version string // the tms release it runs
	BootEnv string // the boot environment (in-memory OS) version it serves; empty if unknown
	// Started identifies the server's process: its start time. A heartbeat of another process
	// with the same id is refused while this one is healthy.
	Started  time.Time
	LastSeen time.Time
}

// Healthy reports whether s heartbeated within staleAfter of now.
func (s Server) Healthy(now time.Time, staleAfter time.Duration) bool {
	return !s.LastSeen.IsZero() && now.Sub(s.LastSeen) <= staleAfter
}

var (
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)
	serverIDRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
)

// ValidateServerID checks a server id: like a host name, lowercase letters, digits, '-' and
// '.', at most 63, starting and ending with a letter or digit.
func ValidateServerID(id string) error {
	if !serverIDRE.MatchString(id) {
		return fmt.Errorf("server id %q: use lowercase letters, digits, '-' and '.', at most 63, starting and ending with a letter or digit", id)
	}
	return nil
}

// ValidateLabels checks location labels as region.labels are checked: keys of lowercase
// letters, digits, '.', '_' and '-' (at most 63), values of letters, digits, '.', '_' and '-'
// (at most 63), at most MaxLabels of them. what names them in errors.
func ValidateLabels(what string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%s: %d labels, at most %d: %w", what, len(labels), MaxLabels, ErrBadLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("%s: %q is not a valid label name (lowercase letters, digits, '.', '_' and '-', at most 63): %w", what, k, ErrBadLabels)
		}
		if v := labels[k]; !labelValueRE.MatchString(v) {
			return fmt.Errorf("%s.%s: %q is not a valid label value (letters, digits, '.', '_' and '-', at most 63): %w", what, k, v, ErrBadLabels)
		}
	}
	return nil
}

// ErrBadLabels marks labels that are not valid, or too many.
var ErrBadLabels = errors.New("bad labels")

// Validate checks a server's record as Heartbeat does: its id, labels, field sizes and times.
func (s Server) Validate() error { return s.check() }

func (s Server) check() error {
	if err := ValidateServerID(s.ID); err != nil {
		return err
	}
	if err := ValidateLabels("server "+s.ID+" labels", s.Labels); err != nil {
		return err
	}
	for _, f := range []string{s.Endpoint, s.BootAddr, s.DHCP, s.Version, s.BootEnv} {
		if len(f) > maxServerField {
			return fmt.Errorf("server %s: a field of %d bytes, at most %d", s.ID, len(f), maxServerField)
		}
	}
	if s.Started.IsZero() || s.LastSeen.IsZero() {
		return fmt.Errorf("server %s: no start or heartbeat time", s.ID)
	}
	return nil
}

// ErrServerTaken marks a server id another healthy process of the region holds.
var ErrServerTaken = fmt.Errorf("server id in use: %w", ErrConflict)

// Heartbeat records that server s is alive at s.LastSeen, with its current description. The
// first heartbeat of a process (a Started the registry does not hold for s.ID) takes the id
// only if no other process holds it, or the one that does is stale (no heartbeat within
// staleAfter of s.LastSeen); otherwise it is refused with ErrServerTaken naming the holder.
// A later heartbeat of a process whose id another took meanwhile (it had gone stale) is
// refused the same way.
func (inv *Inventory) Heartbeat(ctx context.Context, s Server, staleAfter time.Duration) error {
	if err := s.check(); err != nil {
		return err
	}
	labels, err := json.Marshal(nonNilLabels(s.Labels))
	if err != nil {
		return err
	}
	// One statement decides and writes, so that two processes starting at once with one id
	// cannot both take it: the row is replaced only by its own process's heartbeat or once
	// its holder is stale.
	res, err := inv.db.ExecContext(ctx, `INSERT INTO servers (id, labels, endpoint, boot_addr, dhcp, version, bootenv, started, last_seen)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, endpoint = excluded.endpoint, boot_addr = excluded.boot_addr,
		dhcp = excluded.dhcp, version = excluded.version, bootenv = excluded.bootenv, started = excluded.started, last_seen = excluded.last_seen
		WHERE servers.started = excluded.started OR servers.last_seen < ?`,
		s.ID, string(labels), s.Endpoint, s.BootAddr, s.DHCP, s.Version, s.BootEnv, s.Started.UTC().UnixNano(), s.LastSeen.UTC().UnixNano(),
		s.LastSeen.Add(-staleAfter).UTC().UnixNano())
	if err != nil {
		return fmt.Errorf("server %s: %w", s.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	var started, seen int64
	var endpoint string
	if err := inv.db.QueryRowContext(ctx, `SELECT started, last_seen, endpoint FROM servers WHERE id = ?`, s.ID).Scan(&started, &seen, &endpoint); err != nil {
		return fmt.Errorf("server %s: held by another process: %w", s.ID, ErrServerTaken)
	}
	return fmt.Errorf("server %s (%s, started %s, last heartbeat %s) is running: give this server another region.server_id: %w",
		s.ID, endpoint, time.Unix(0, started).UTC().Format(time.RFC3339), time.Unix(0, seen).UTC().Format(time.RFC3339), ErrServerTaken)
}

// ReleaseServer gives up server id's claim if the process that holds it started at started:
// a server restarted after a crash (its data directory remembers when its last process
// started) takes its id back at once instead of waiting for it to go stale. A claim of any
// other process is left alone.
func (inv *Inventory) ReleaseServer(ctx context.Context, id string, started time.Time) error {
	if _, err := inv.db.ExecContext(ctx, `UPDATE servers SET last_seen = 0 WHERE id = ? AND started = ?`, id, started.UTC().UnixNano()); err != nil {
		return fmt.Errorf("server %s: %w", id, err)
	}
	return nil
}

// SetServerBootEnv records the boot environment version server id serves.
func (inv *Inventory) SetServerBootEnv(ctx context.Context, id, bootenv string) error {
	if len(bootenv) > maxServerField {
		return fmt.Errorf("server %s: a boot environment version of %d bytes, at most %d", id, len(bootenv), maxServerField)
	}
	res, err := inv.db.ExecContext(ctx, `UPDATE servers SET bootenv = ? WHERE id = ?`, bootenv, id)
	if err != nil {
		return fmt.Errorf("server %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err != nil {
			return err
		}
		return notFound("server " + id)
	}
	return nil
}

// Servers lists the region's servers, healthy or not, by id: at most MaxServersListed, the
// most recently seen.
func (inv *Inventory) Servers(ctx context.Context) ([]Server, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT id, labels, endpoint, boot_addr, dhcp, version, bootenv, started, last_seen
		FROM servers ORDER BY last_seen DESC, id LIMIT ?`, MaxServersListed)
	if err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	defer rows.Close()
	var out []Server
	for rows.Next() {
		var s Server
		var labels string
		var started, seen int64
		if err := rows.Scan(&s.ID, &labels, &s.Endpoint, &s.BootAddr, &s.DHCP, &s.Version, &s.BootEnv, &started, &seen); err != nil {
			return nil, fmt.Errorf("servers: %w", err)
		}
		if err := json.Unmarshal([]byte(labels), &s.Labels); err != nil {
			return nil, fmt.Errorf("server %s: labels: %w", s.ID, err)
		}
		s.Started, s.LastSeen = time.Unix(0, started).UTC(), time.Unix(0, seen).UTC()
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	slices.SortFunc(out, func(a, b Server) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// SettingsVersion is a counter that moves whenever the settings overrides change (SetSetting).
func (inv *Inventory) SettingsVersion(ctx context.Context) (int64, error) {
	var n int64
	if err := inv.db.QueryRowContext(ctx, `SELECT n FROM settings_version WHERE id = 1`).Scan(&n); err != nil {
		return 0, fmt.Errorf("settings version: %w", err)
	}
	return n, nil
}

// LabelChange is what SetGroupLabels does to a group's labels: Clear removes them all first,
// then Set sets (replacing a key's value) and Remove removes keys.
type LabelChange struct {
	Set    map[string]string
	Remove []string
	Clear  bool
}

// SetGroupLabels changes a group's location labels and returns them as they now stand. A
// group has at most MaxLabels labels.
func (inv *Inventory) SetGroupLabels(ctx context.Context, group string, c LabelChange) (map[string]string, error) {
	if err := ValidateLabels("group "+group+" labels", c.Set); err != nil {
		return nil, err
	}
	if len(c.Remove) > MaxLabels*4 {
		return nil, fmt.Errorf("group %s: %d labels to remove, at most %d: %w", group, len(c.Remove), MaxLabels*4, ErrBadLabels)
	}
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// The admin edits' lock (docs/state.md): two servers changing one group's labels at once
	// take turns, so the bound on labels holds.
	if err := tx.lock(ctx, "terminals"); err != nil {
		return nil, err
	}
	if err := groupExists(ctx, tx, group); err != nil {
		return nil, err
	}
	if c.Clear {
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_labels WHERE grp = ?`, group); err != nil {
			return nil, err
		}
	}
	for _, k := range c.Remove {
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_labels WHERE grp = ? AND key = ?`, group, k); err != nil {
			return nil, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Set)) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO group_labels (grp, key, value) VALUES (?, ?, ?)
			ON CONFLICT (grp, key) DO UPDATE SET value = excluded.value`, group, k, c.Set[k]); err != nil {
			return nil, err
		}
	}
	labels, err := groupLabels(ctx, tx, group)
	if err != nil {
		return nil, err
	}
	if len(labels[group]) > MaxLabels {
		return nil, fmt.Errorf("group %s would have %d labels, at most %d: %w", group, len(labels[group]), MaxLabels, ErrBadLabels)
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return nonNilLabels(labels[group]), nil
}

// GroupLabels returns the labels of every group that has some, by group.
func (inv *Inventory) GroupLabels(ctx context.Context) (map[string]map[string]string, error) {
	return groupLabels(ctx, inv.db, "")
}

func groupLabels(ctx context.Context, q rowsQuerier, group string) (map[string]map[string]string, error) {
	query, args := `SELECT grp, key, value FROM group_labels ORDER BY grp, key`, []any(nil)
	if group != "" {
		query, args = `SELECT grp, key, value FROM group_labels WHERE grp = ? ORDER BY key`, []any{group}
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("group labels: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var g, k, v string
		if err := rows.Scan(&g, &k, &v); err != nil {
			return nil, err
		}
		if out[g] == nil {
			out[g] = map[string]string{}
		}
		out[g][k] = v
	}
	return out, rows.Err()
}

// TerminalLabels returns the location labels of every terminal (by MAC) in a labelled group:
// its groups' labels merged. Where two of its groups give a key different values, the group
// first by name wins. Terminals in no labelled group are absent.
func (inv *Inventory) TerminalLabels(ctx context.Context) (map[string]map[string]string, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT m.mac, l.key, l.value FROM group_members m JOIN group_labels l ON l.grp = m.grp
		ORDER BY m.mac, m.grp, l.key`)
	if err != nil {
		return nil, fmt.Errorf("terminal labels: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var mac, k, v string
		if err := rows.Scan(&mac, &k, &v); err != nil {
			return nil, err
		}
		if out[mac] == nil {
			out[mac] = map[string]string{}
		}
		if _, ok := out[mac][k]; !ok {
			out[mac][k] = v
		}
	}
	return out, rows.Err()
}

func nonNilLabels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
