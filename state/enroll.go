package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Keeping a lab's inventory: terminals seen on the network and enrolled in one go, renamed,
// moved between groups and removed; groups emptied and removed. Rosters (CSV files of
// MAC,name,group) are in roster.go.

// firstSeenMigration records when a terminal was first seen, so that terminals switched on
// seat by seat can be enrolled in that order. Existing rows get their last_seen; afterwards
// first_seen is set the first time last_seen is (by triggers, so Seen and every other writer
// of last_seen need not know).
var firstSeenMigration = migration{version: 7, sql: `
ALTER TABLE terminals ADD COLUMN first_seen INTEGER NOT NULL DEFAULT 0;
UPDATE terminals SET first_seen = last_seen;
CREATE TRIGGER terminals_first_seen_insert AFTER INSERT ON terminals
	WHEN NEW.first_seen = 0 AND NEW.last_seen != 0
	BEGIN UPDATE terminals SET first_seen = NEW.last_seen WHERE mac = NEW.mac; END;
CREATE TRIGGER terminals_first_seen_update AFTER UPDATE OF last_seen ON terminals
	WHEN NEW.first_seen = 0 AND NEW.last_seen != 0
	BEGIN UPDATE terminals SET first_seen = NEW.last_seen WHERE mac = NEW.mac; END;
`, postgres: `
ALTER TABLE terminals ADD COLUMN first_seen BIGINT NOT NULL DEFAULT 0;
UPDATE terminals SET first_seen = last_seen;
-- One BEFORE trigger sets the row's own first_seen, as SQLite's two AFTER triggers do.
CREATE FUNCTION terminals_first_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.first_seen = 0 AND NEW.last_seen != 0 THEN
		NEW.first_seen := NEW.last_seen;
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER terminals_first_seen BEFORE INSERT OR UPDATE OF last_seen ON terminals
	FOR EACH ROW EXECUTE FUNCTION terminals_first_seen();
`}

// SeenTerminal is a terminal seen on the network (a DHCP request, an agent's call) that no
// admin has enrolled.
type SeenTerminal struct {
	MAC       string
	LastIP    string
	FirstSeen time.Time
	LastSeen  time.Time
}

// SeenTerminals lists the terminals seen but not enrolled, first seen first.
func (inv *Inventory) SeenTerminals(ctx context.Context) ([]SeenTerminal, error) {
	return seenTerminals(ctx, inv.db)
}

type rowsQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*dbRows, error)
}

func seenTerminals(ctx context.Context, q rowsQuerier) ([]SeenTerminal, error) {
	rows, err := q.QueryContext(ctx, `SELECT mac, last_ip, first_seen, last_seen FROM terminals
		WHERE enrolled = 0 ORDER BY first_seen, mac`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SeenTerminal
	for rows.Next() {
		var s SeenTerminal
		var first, last int64
		if err := rows.Scan(&s.MAC, &s.LastIP, &first, &last); err != nil {
			return nil, err
		}
		s.FirstSeen, s.LastSeen = unixTime(first), unixTime(last)
		out = append(out, s)
	}
	return out, rows.Err()
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// ErrInvalid marks a request that cannot be done as asked: a malformed name or pattern, a
// terminal that is not enrolled, a roster file that is too big or not CSV. Retrying it is no use.
var ErrInvalid = errors.New("invalid request")

// marked is an error whose message is its own, and that is also mark (errors.Is): the
// sentinel decides, without its words ("already exists") in the message an admin reads.
type marked struct {
	error
	mark error
}

func (e marked) Unwrap() error        { return e.error }
func (e marked) Is(target error) bool { return errors.Is(e.mark, target) }

// invalid marks err as the request's fault (ErrInvalid); its message stays as it is.
func invalid(err error) error { return marked{err, ErrInvalid} }

// conflict marks err as a refusal (ErrConflict); its message stays as it is.
func conflict(err error) error { return marked{err, ErrConflict} }

// ErrBusy marks a terminal that cannot be removed: it has an unfinished task. It wraps
// ErrConflict.
var ErrBusy = fmt.Errorf("busy with a task: %w", ErrConflict)

// busyWith returns the task a terminal is busy with: an unfinished task, or a boot action
// into a task that has not expired; "" if none.
func busyWith(ctx context.Context, q querier, mac string, now time.Time) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM tasks WHERE mac = ? AND state IN (?, ?) ORDER BY created LIMIT 1`,
		mac, TaskWaiting, TaskRunning).Scan(&id)
	if err == nil || !errors.Is(err, sql.ErrNoRows) {
		return id, err
	}
	err = q.QueryRowContext(ctx, `SELECT task FROM boot_actions WHERE mac = ? AND action != 'local' AND (expires = 0 OR expires > ?)`,
		mac, now.UTC().UnixNano()).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err == nil && id == "" {
		id = "(a boot action without a task id)"
	}
	return id, err
}

// RemoveTerminals removes terminals (by MAC or name, enrolled or only seen) from the
// inventory: their records, agent keys, group memberships and boot actions. Their finished
// task records stay (they are kept by MAC). A terminal busy with a task is refused (ErrBusy,
// naming the task), and then none is removed. A removed terminal that boots again shows up as
// seen, not enrolled.
func (inv *Inventory) RemoveTerminals(ctx context.Context, now time.Time, terminals ...string) ([]Terminal, error) {
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return nil, err
	}
	var out []Terminal
	for _, name := range terminals {
		t, err := terminal(ctx, tx, name)
		if err != nil {
			return nil, err
		}
		// StartTask holds the same lock: no task starts between the check and the removal.
		if err := tx.lock(ctx, "terminal "+t.MAC); err != nil {
			return nil, err
		}
		task, err := busyWith(ctx, tx, t.MAC, now)
		if err != nil {
			return nil, err
		}
		if task != "" {
			return nil, marked{fmt.Errorf("terminal %s has the unfinished task %s (cancel it first)", name, task), ErrBusy}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM terminals WHERE mac = ?`, t.MAC); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, tx.Commit()
}

// enrolledTerminal finds a terminal by MAC or name and insists that it is enrolled.
func enrolledTerminal(ctx context.Context, q querier, name string) (Terminal, error) {
	t, err := terminal(ctx, q, name)
	if err == nil && !t.Enrolled {
		err = invalid(fmt.Errorf("terminal %s is not enrolled: enroll it first", name))
	}
	return t, err
}

// nameHolder returns the MAC of the terminal called name, "" if none is.
func nameHolder(ctx context.Context, q querier, name string) (string, error) {
	var mac string
	err := q.QueryRowContext(ctx, `SELECT mac FROM terminals WHERE name = ?`, name).Scan(&mac)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return mac, err
}

// RenameTerminal gives an enrolled terminal (by MAC or name) a new name. A name taken by
// another terminal is refused (ErrConflict, naming its MAC). Tasks are kept by MAC: they go on.
func (inv *Inventory) RenameTerminal(ctx context.Context, term, newName string) (Terminal, error) {
	if err := validateWord("terminal name", newName); err != nil {
		return Terminal{}, invalid(err)
	}
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return Terminal{}, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return Terminal{}, err
	}
	t, err := enrolledTerminal(ctx, tx, term)
	if err != nil {
		return t, err
	}
	holder, err := nameHolder(ctx, tx, newName)
	if err != nil {
		return t, err
	}
	if holder != "" && holder != t.MAC {
		return t, conflict(fmt.Errorf("terminal name %q is taken by %s", newName, holder))
	}
	if _, err := tx.ExecContext(ctx, `UPDATE terminals SET name = ? WHERE mac = ?`, newName, t.MAC); err != nil {
		return t, err
	}
	return t, tx.Commit()
}

func groupExists(ctx context.Context, q querier, group string) error {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM groups WHERE name = ?`, group).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return notFound("group " + group)
	}
	return nil
}

// MoveTerminals makes enrolled terminals (by MAC or name) members of group and of no other.
func (inv *Inventory) MoveTerminals(ctx context.Context, group string, terminals ...string) error {
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return err
	}
	if err := groupExists(ctx, tx, group); err != nil {
		return err
	}
	for _, name := range terminals {
		t, err := enrolledTerminal(ctx, tx, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE mac = ? AND grp != ?`, t.MAC, group); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO group_members (grp, mac) VALUES (?, ?)`, group, t.MAC); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// RemoveFromGroup takes terminals (by MAC or name) out of a group; they stay enrolled. A
// terminal that is not a member is refused, and then none is taken out.
func (inv *Inventory) RemoveFromGroup(ctx context.Context, group string, terminals ...string) error {
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return err
	}
	if err := groupExists(ctx, tx, group); err != nil {
		return err
	}
	for _, name := range terminals {
		t, err := terminal(ctx, tx, name)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE grp = ? AND mac = ?`, group, t.MAC)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err != nil {
				return err
			}
			return notFound(fmt.Sprintf("terminal %s in group %s", name, group))
		}
	}
	return tx.Commit()
}

// RemoveGroup removes a group; its members stay enrolled. A group with members is refused
// (ErrConflict) unless force is set. It returns how many members the group had.
func (inv *Inventory) RemoveGroup(ctx context.Context, group string, force bool) (int, error) {
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return 0, err
	}
	if err := groupExists(ctx, tx, group); err != nil {
		return 0, err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM group_members WHERE grp = ?`, group).Scan(&n); err != nil {
		return 0, err
	}
	if n > 0 && !force {
		return n, conflict(fmt.Errorf("group %s has %d terminal(s)", group, n))
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM groups WHERE name = ?`, group); err != nil {
		return n, err
	}
	return n, tx.Commit()
}

// NamePattern makes terminal names from numbers: a prefix, the number (zero-padded to Width
// digits, if Width > 0) and a suffix. It is written like r3-pc{n} or r3-pc{n:02}.
type NamePattern struct {
	Prefix, Suffix string
	Width          int
}

// ParseNamePattern parses a name pattern: a terminal name with one {n} (or {n:0W}, W from 1 to
// 9, for numbers zero-padded to W digits) where the number goes.
func ParseNamePattern(s string) (NamePattern, error) {
	i := strings.Index(s, "{")
	j := strings.Index(s, "}")
	if i < 0 || j < i || strings.Count(s, "{") != 1 || strings.Count(s, "}") != 1 {
		return NamePattern{}, invalid(fmt.Errorf("name pattern %q needs one {n} (or {n:02}) where the number goes", s))
	}
	p := NamePattern{Prefix: s[:i], Suffix: s[j+1:]}
	switch inner := s[i+1 : j]; {
	case inner == "n":
	case len(inner) == 4 && strings.HasPrefix(inner, "n:0") && inner[3] >= '1' && inner[3] <= '9':
		p.Width = int(inner[3] - '0')
	default:
		return NamePattern{}, invalid(fmt.Errorf("name pattern %q: {%s} is not {n} or {n:0W} with W from 1 to 9", s, inner))
	}
	if err := validateWord("name pattern", p.Name(1)); err != nil {
		return NamePattern{}, invalid(err)
	}
	return p, nil
}

// Name is the name of number n.
func (p NamePattern) Name(n int) string {
	return fmt.Sprintf("%s%0*d%s", p.Prefix, p.Width, n, p.Suffix)
}

// Number is the number in a name the pattern makes, and whether it is one.
func (p NamePattern) Number(name string) (int, bool) {
	d, ok := strings.CutPrefix(name, p.Prefix)
	if !ok {
		return 0, false
	}
	if d, ok = strings.CutSuffix(d, p.Suffix); !ok || d == "" || len(d) > 9 {
		return 0, false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(d)
	return n, err == nil
}

func (p NamePattern) String() string {
	if p.Width > 0 {
		return fmt.Sprintf("%s{n:0%d}%s", p.Prefix, p.Width, p.Suffix)
	}
	return p.Prefix + "{n}" + p.Suffix
}

// EnrollSeenResult is what EnrollSeen did.
type EnrollSeenResult struct {
	Enrolled     []Terminal // MAC and new name, in the order they were numbered
	CreatedGroup bool
}

// EnrollSeen enrolls the terminals seen but not enrolled, in the order they were first seen
// (so that PCs switched on seat by seat are numbered by seat), at most limit of them (0: all),
// naming them from pattern starting after the highest number a terminal name of the pattern
// already has, and adds them to group, creating the group if it does not exist. With no
// terminal waiting it does nothing.
func (inv *Inventory) EnrollSeen(ctx context.Context, group string, pattern NamePattern, limit int) (EnrollSeenResult, error) {
	var res EnrollSeenResult
	if err := validateWord("group name", group); err != nil {
		return res, invalid(err)
	}
	if limit < 0 {
		return res, invalid(fmt.Errorf("limit %d is negative", limit))
	}
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminals"); err != nil {
		return res, err
	}
	seen, err := seenTerminals(ctx, tx)
	if err != nil {
		return res, err
	}
	if limit > 0 && len(seen) > limit {
		seen = seen[:limit]
	}
	next, err := nextNumber(ctx, tx, pattern)
	if err != nil {
		return res, err
	}
	if len(seen) == 0 {
		return res, nil
	}
	r, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO groups (name) VALUES (?)`, group)
	if err != nil {
		return res, err
	}
	created, err := r.RowsAffected()
	if err != nil {
		return res, err
	}
	res.CreatedGroup = created > 0
	for _, s := range seen {
		name := pattern.Name(next)
		next++
		if err := validateWord("terminal name", name); err != nil {
			return res, invalid(err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE terminals SET name = ?, enrolled = 1 WHERE mac = ?`, name, s.MAC); err != nil {
			if isUnique(err) {
				return res, conflict(fmt.Errorf("terminal name %q is taken", name))
			}
			return res, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO group_members (grp, mac) VALUES (?, ?)`, group, s.MAC); err != nil {
			return res, err
		}
		res.Enrolled = append(res.Enrolled, Terminal{MAC: s.MAC, Name: name, Enrolled: true, LastIP: s.LastIP, LastSeen: s.LastSeen})
	}
	return res, tx.Commit()
}

// nextNumber is one more than the highest number a terminal name of pattern has, or 1.
func nextNumber(ctx context.Context, q rowsQuerier, p NamePattern) (int, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM terminals WHERE name IS NOT NULL`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	high := 0
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return 0, err
		}
		if n, ok := p.Number(name); ok && n > high {
			high = n
		}
	}
	return high + 1, rows.Err()
}
