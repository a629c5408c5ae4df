package state

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"tms/agentwire"
	"tms/manifest"
)

var inventoryMigrations = []migration{{version: 1, sql: `
CREATE TABLE terminals (
	mac       TEXT PRIMARY KEY,
	name      TEXT UNIQUE,
	enrolled  INTEGER NOT NULL DEFAULT 0,
	disk      TEXT NOT NULL DEFAULT '',
	disk_size INTEGER NOT NULL DEFAULT 0,
	version   TEXT NOT NULL DEFAULT '',
	last_ip   TEXT NOT NULL DEFAULT '',
	last_seen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE groups (name TEXT PRIMARY KEY);
CREATE TABLE group_members (
	grp TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
	mac TEXT NOT NULL REFERENCES terminals (mac) ON DELETE CASCADE,
	PRIMARY KEY (grp, mac)
);
CREATE TABLE boot_actions (
	mac        TEXT PRIMARY KEY REFERENCES terminals (mac) ON DELETE CASCADE,
	action     TEXT NOT NULL CHECK (action IN ('local', 'capture', 'deploy')),
	task       TEXT NOT NULL DEFAULT '',
	image      TEXT NOT NULL DEFAULT '',
	token_hash BLOB,
	expires    INTEGER NOT NULL DEFAULT 0
);
`}, {version: 2, sql: `
CREATE TABLE tasks (
	id        TEXT PRIMARY KEY,
	mac       TEXT NOT NULL,
	kind      TEXT NOT NULL CHECK (kind IN ('capture', 'deploy')),
	image     TEXT NOT NULL,
	state     TEXT NOT NULL CHECK (state IN ('waiting', 'running', 'done', 'failed', 'canceled')),
	waiter    BLOB,
	progress  TEXT NOT NULL DEFAULT '',
	result    TEXT NOT NULL DEFAULT '',
	error     TEXT NOT NULL DEFAULT '',
	created   INTEGER NOT NULL,
	updated   INTEGER NOT NULL
);
CREATE INDEX tasks_by_mac ON tasks (mac, created);
`}, {version: 3, sql: `
ALTER TABLE boot_actions ADD COLUMN prev_token_hash BLOB;
ALTER TABLE boot_actions ADD COLUMN claim_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE boot_actions ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE boot_actions ADD COLUMN claim_network INTEGER NOT NULL DEFAULT 0;
ALTER TABLE terminals ADD COLUMN agent_key BLOB;
`}, {version: 4, sql: `
-- Seen keeps at most MaxUnknownTerminals not-enrolled terminals, dropping the ones seen least
-- recently: this index finds them without reading the table.
CREATE INDEX terminals_by_seen ON terminals (enrolled, last_seen);
`}, updateTaskMigration, enrollTokenMigration, firstSeenMigration, {version: 8, sql: `
-- Why a terminal's disk holds no known version (a task writing it, a disk check that failed).
ALTER TABLE terminals ADD COLUMN version_note TEXT NOT NULL DEFAULT '';
`}, settingsMigration, lastDeployedMigration, serversMigration, groupLabelsMigration, siblingSecretMigration, probeTaskMigration, taskWritersMigration}

// Inventory is a region's own state: its terminals, groups and boot actions.
type Inventory struct{ db *database }

// OpenInventory opens (creating if needed) a region's inventory database at path.
func OpenInventory(ctx context.Context, path string, opts ...Option) (*Inventory, error) {
	db, err := open(ctx, path, inventoryMigrations, opts...)
	if err != nil {
		return nil, err
	}
	return &Inventory{db: db}, nil
}

// Close closes the database.
func (inv *Inventory) Close() error { return inv.db.Close() }

// NormalizeMAC returns a 48-bit MAC address as lowercase aa:bb:cc:dd:ee:ff.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not a MAC address like aa:bb:cc:dd:ee:ff", s)
	}
	return hw.String(), nil
}

// Terminal is one PC of the region.
type Terminal struct {
	MAC      string
	Name     string // unique in the region; empty until enrolled
	Enrolled bool   // false: seen on the network but not enrolled by an admin
	Disk     string
	DiskSize int64
	Version  manifest.ID // what its disk holds, as far as tms knows
	// VersionNote says why Version is unknown, when it is and tms knows why: a task was
	// writing the disk, or a disk check found it changed.
	VersionNote string
	LastIP      string
	LastSeen    time.Time
}

// MaxUnknownTerminals is the most not-enrolled terminals (MACs seen on the network that no admin
// has enrolled) the inventory keeps. Anyone on a classroom's network can make up MACs; past
// this many, each new one replaces the one seen least recently.
const MaxUnknownTerminals = 1024

// UnknownTerminalTTL is how long a not-enrolled terminal stays in the inventory after it was
// last seen.
const UnknownTerminalTTL = 7 * 24 * time.Hour

// evictable is the condition on a terminals row that Seen may drop: not enrolled, in no group,
// with no boot action and no task. An admin's work is never dropped.
const evictable = `enrolled = 0
	AND NOT EXISTS (SELECT 1 FROM boot_actions b WHERE b.mac = terminals.mac)
	AND NOT EXISTS (SELECT 1 FROM tasks k WHERE k.mac = terminals.mac)
	AND NOT EXISTS (SELECT 1 FROM group_members g WHERE g.mac = terminals.mac)`

// Seen records that a terminal showed up (a DHCP request, an agent's call), creating a
// not-enrolled record for an unknown MAC so that an admin can enroll it.
//
// Not-enrolled terminals are bounded: recording a new one drops those not seen within
// UnknownTerminalTTL of at, then, past MaxUnknownTerminals, the ones seen least recently.
// Enrolled terminals, group members and terminals with a boot action or a task are never
// dropped (nor counted out: the bound counts every not-enrolled terminal).
func (inv *Inventory) Seen(ctx context.Context, mac, ip string, at time.Time) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if len(ip) > 64 {
		return fmt.Errorf("an address of %d bytes is not an IP address", len(ip))
	}
	seen := at.UTC().UnixNano()
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE terminals SET last_ip = ?, last_seen = ? WHERE mac = ?`, ip, seen, mac)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		if err != nil {
			return err
		}
		return tx.Commit()
	}
	// ON CONFLICT: another server of the region may record the same new MAC at the same time.
	if _, err := tx.ExecContext(ctx, `INSERT INTO terminals (mac, last_ip, last_seen) VALUES (?, ?, ?)
		ON CONFLICT (mac) DO UPDATE SET last_ip = excluded.last_ip, last_seen = excluded.last_seen`, mac, ip, seen); err != nil {
		return err
	}
	if err := pruneUnknown(ctx, tx, at); err != nil {
		return fmt.Errorf("dropping old not-enrolled terminals: %w", err)
	}
	return tx.Commit()
}

// pruneUnknown drops the not-enrolled terminals Seen keeps no longer: expired ones, then the
// least recently seen past MaxUnknownTerminals.
func pruneUnknown(ctx context.Context, tx *dbTx, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM terminals WHERE last_seen < ? AND `+evictable,
		now.Add(-UnknownTerminalTTL).UTC().UnixNano()); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM terminals WHERE enrolled = 0`).Scan(&n); err != nil {
		return err
	}
	if n <= MaxUnknownTerminals {
		return nil
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM terminals WHERE mac IN (
		SELECT mac FROM terminals WHERE `+evictable+` ORDER BY last_seen, mac LIMIT ?)`, n-MaxUnknownTerminals)
	return err
}

// SetDisk records the disk a terminal's agent reported: its device (or file) and size in bytes.
func (inv *Inventory) SetDisk(ctx context.Context, mac, disk string, size int64) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("disk size %d is negative", size)
	}
	res, err := inv.db.ExecContext(ctx, `UPDATE terminals SET disk = ?, disk_size = ? WHERE mac = ?`, disk, size, mac)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("terminal " + mac)
	}
	return nil
}

// Enroll makes mac an enrolled terminal called name.
func (inv *Inventory) Enroll(ctx context.Context, mac, name string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if err := validateWord("terminal name", name); err != nil {
		return err
	}
	_, err = inv.db.ExecContext(ctx, `INSERT INTO terminals (mac, name, enrolled) VALUES (?, ?, 1)
		ON CONFLICT (mac) DO UPDATE SET name = excluded.name, enrolled = 1`, mac, name)
	if isUnique(err) {
		// Two servers sharing PostgreSQL enrolling the same terminal under the same name at
		// once: the loser meets the winner's name. That is done, not taken.
		if holder, herr := nameHolder(ctx, inv.db, name); herr == nil && holder == mac {
			return nil
		}
		return fmt.Errorf("terminal name %q is taken: %w", name, ErrConflict)
	}
	return err
}

// ErrConflict marks a name or key that is already taken.
var ErrConflict = errors.New("already exists")

func validateWord(what, s string) error {
	if err := manifest.ValidateName(s); err != nil {
		return fmt.Errorf("%s: %s", what, strings.TrimPrefix(err.Error(), "image name "))
	}
	return nil
}

const terminalCols = `mac, COALESCE(name, ''), enrolled, disk, disk_size, version, last_ip, last_seen, version_note`

func scanTerminal(row interface{ Scan(...any) error }) (Terminal, error) {
	var t Terminal
	var version string
	var seen int64
	if err := row.Scan(&t.MAC, &t.Name, &t.Enrolled, &t.Disk, &t.DiskSize, &version, &t.LastIP, &seen, &t.VersionNote); err != nil {
		return t, err
	}
	if version != "" {
		id, err := manifest.ParseID(version)
		if err != nil {
			return t, err
		}
		t.Version = id
	}
	if seen != 0 {
		t.LastSeen = time.Unix(0, seen).UTC()
	}
	return t, nil
}

// querier is a database or a transaction: with one connection, a lookup inside a transaction
// must go through the transaction, or it waits for itself.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *dbRow
}

// Terminal finds a terminal by MAC address or by name.
func (inv *Inventory) Terminal(ctx context.Context, macOrName string) (Terminal, error) {
	return terminal(ctx, inv.db, macOrName)
}

func terminal(ctx context.Context, q querier, macOrName string) (Terminal, error) {
	key, col := macOrName, "name"
	if mac, err := NormalizeMAC(macOrName); err == nil {
		key, col = mac, "mac"
	}
	t, err := scanTerminal(q.QueryRowContext(ctx, `SELECT `+terminalCols+` FROM terminals WHERE `+col+` = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return t, notFound("terminal " + macOrName)
	}
	return t, err
}

// Terminals lists the terminals, enrolled ones first, by name then MAC.
func (inv *Inventory) Terminals(ctx context.Context) ([]Terminal, error) {
	return inv.terminals(ctx, `SELECT `+terminalCols+` FROM terminals ORDER BY enrolled DESC, name, mac`)
}

// TerminalCounts are how many terminals a region has enrolled, and how many of those showed up
// recently.
type TerminalCounts struct {
	Enrolled int64
	Online   int64 // enrolled and seen (a DHCP request, a script, an agent's call) since the time asked
}

// CountTerminals counts the enrolled terminals and those of them seen at or after since. It is
// one aggregate over the (enrolled, last_seen) index, whatever the region's size: the metrics
// run it on every scrape.
func (inv *Inventory) CountTerminals(ctx context.Context, since time.Time) (TerminalCounts, error) {
	var c TerminalCounts
	err := inv.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN last_seen >= ? THEN 1 ELSE 0 END), 0) FROM terminals WHERE enrolled = 1`,
		since.UTC().UnixNano()).Scan(&c.Enrolled, &c.Online)
	if err != nil {
		return TerminalCounts{}, fmt.Errorf("counting terminals: %w", err)
	}
	return c, nil
}

func (inv *Inventory) terminals(ctx context.Context, q string, args ...any) ([]Terminal, error) {
	rows, err := inv.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Terminal
	for rows.Next() {
		t, err := scanTerminal(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// CreateGroup creates an empty group.
func (inv *Inventory) CreateGroup(ctx context.Context, name string) error {
	if err := validateWord("group name", name); err != nil {
		return err
	}
	_, err := inv.db.ExecContext(ctx, `INSERT INTO groups (name) VALUES (?)`, name)
	if isUnique(err) {
		return fmt.Errorf("group %s: %w", name, ErrConflict)
	}
	return err
}

// AddToGroup adds enrolled terminals (by MAC or name) to a group.
func (inv *Inventory) AddToGroup(ctx context.Context, group string, terminals ...string) error {
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return err
	}
	var exists int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM groups WHERE name = ?`, group).Scan(&exists); err != nil {
		return err
	}
	if exists == 0 {
		return notFound("group " + group)
	}
	for _, t := range terminals {
		term, err := terminal(ctx, tx, t)
		if err != nil {
			return err
		}
		if !term.Enrolled {
			return fmt.Errorf("terminal %s is not enrolled: enroll it before adding it to a group", t)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO group_members (grp, mac) VALUES (?, ?)`, group, term.MAC); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Groups lists the group names.
func (inv *Inventory) Groups(ctx context.Context) ([]string, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT name FROM groups ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Members lists a group's terminals.
func (inv *Inventory) Members(ctx context.Context, group string) ([]Terminal, error) {
	var exists int
	if err := inv.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM groups WHERE name = ?`, group).Scan(&exists); err != nil {
		return nil, err
	}
	if exists == 0 {
		return nil, notFound("group " + group)
	}
	return inv.terminals(ctx, `SELECT `+terminalCols+` FROM terminals WHERE mac IN (SELECT mac FROM group_members WHERE grp = ?) ORDER BY name, mac`, group)
}

// BootAction is what a terminal does at its next network boot.
type BootAction struct {
	Action  agentwire.Action
	Task    string // the workflow it belongs to
	Image   string // capture: the image name
	Version string // deploy, update: the version id
	Expires time.Time
}

// NewToken returns a fresh task token for a terminal's boot: 32 random bytes, base64url.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// SetBootAction sets a terminal's next boot action. Whatever claimed its previous boot is
// forgotten: the next boot into the task is claimed afresh (ClaimBoot).
func (inv *Inventory) SetBootAction(ctx context.Context, mac string, a BootAction) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if _, task := a.Action.Task(); !task && a.Action != agentwire.ActionLocal {
		return fmt.Errorf("boot action %q is not local, capture, deploy, update or probe", a.Action)
	}
	_, err = inv.db.ExecContext(ctx, `INSERT INTO boot_actions (mac, action, task, image, token_hash, prev_token_hash, claim_ip, claimed, claim_network, expires)
		VALUES (?, ?, ?, ?, NULL, NULL, '', 0, 0, ?)
		ON CONFLICT (mac) DO UPDATE SET action = excluded.action, task = excluded.task, image = excluded.image,
		token_hash = NULL, prev_token_hash = NULL, claim_ip = '', claimed = 0, claim_network = 0, expires = excluded.expires`,
		mac, a.Action, a.Task, subject(agentwire.Kind(a.Action), a.Image, a.Version), a.Expires.UTC().UnixNano())
	if isForeignKey(err) {
		return notFound("terminal " + mac)
	}
	return err
}

// BootAction returns a terminal's boot action: ActionLocal when none is set or it has expired.
func (inv *Inventory) BootAction(ctx context.Context, mac string, now time.Time) (BootAction, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return BootAction{}, err
	}
	var a BootAction
	var exp int64
	var col string
	err = inv.db.QueryRowContext(ctx, `SELECT action, task, image, expires FROM boot_actions WHERE mac = ?`, mac).Scan(&a.Action, &a.Task, &col, &exp)
	setSubject(agentwire.Kind(a.Action), col, &a.Image, &a.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return BootAction{Action: agentwire.ActionLocal}, nil
	}
	if err != nil {
		return a, err
	}
	a.Expires = time.Unix(0, exp).UTC()
	if exp != 0 && !now.Before(a.Expires) {
		return BootAction{Action: agentwire.ActionLocal}, nil
	}
	return a, nil
}

// ClearBootAction resets a terminal to boot from its own disk.
func (inv *Inventory) ClearBootAction(ctx context.Context, mac string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	_, err = inv.db.ExecContext(ctx, `DELETE FROM boot_actions WHERE mac = ?`, mac)
	return err
}
