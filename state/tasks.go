package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"tms/agentwire"
	"tms/manifest"
)

// TaskState is where a terminal task stands. The strings are stored in the database and travel
// in workflow histories (activities.FinishInput): they do not change.
type TaskState string

// Task states.
const (
	TaskWaiting  TaskState = "waiting"  // set up; the terminal has not reported yet
	TaskRunning  TaskState = "running"  // the agent reports progress
	TaskDone     TaskState = "done"     // the agent finished and the region checked its work
	TaskFailed   TaskState = "failed"   // the agent or the region gave up; Error says why
	TaskCanceled TaskState = "canceled" // the workflow was canceled
)

// Task is one terminal's part of a capture, deploy or update: what its agent is asked to do, how far
// it got and how it ended. ID is the workflow id of the terminal's task.
type Task struct {
	ID      string
	MAC     string
	Kind    agentwire.Kind
	Image   string // capture: the image name the new version is published under
	Version string // deploy, update: the version id written
	// Base is the version an update's terminal held when the update was set up: the agent
	// writes the chunks that differ between it and Version.
	Base  string
	State TaskState
	// Waiter is the Temporal task token of the activity waiting for the agent, so the region's
	// HTTP service can complete it when the agent reports; nil until the activity starts.
	Waiter   []byte
	Progress string // the agent's last progress report, JSON
	Result   string // the outcome, JSON
	Error    string
	Created  time.Time
	Updated  time.Time
	// Writers is how many terminals the task's deploy or update writes its version at once,
	// as its workflow said (0: not said).
	Writers int
}

// Finished reports whether the task has ended, one way or another.
func (t Task) Finished() bool {
	return t.State == TaskDone || t.State == TaskFailed || t.State == TaskCanceled
}

const taskCols = `id, mac, kind, image, state, waiter, progress, result, error, created, updated, base, writers`

// subject is what the task works on, as its image column holds it: a capture's image name, a
// deploy's or update's version id, a probe's version of the in-memory OS.
func subject(kind agentwire.Kind, image, version string) string {
	if namesVersion(kind) {
		return version
	}
	return image
}

// setSubject fills Image or Version from the image column, by kind.
func setSubject(kind agentwire.Kind, col string, image, version *string) {
	if namesVersion(kind) {
		*version = col
	} else {
		*image = col
	}
}

// namesVersion reports whether a task of kind k works on a version (rather than an image name).
func namesVersion(k agentwire.Kind) bool { return k.Writes() || k == agentwire.KindProbe }

func scanTask(row interface{ Scan(...any) error }) (Task, error) {
	var t Task
	var created, updated int64
	var col string
	err := row.Scan(&t.ID, &t.MAC, &t.Kind, &col, &t.State, &t.Waiter, &t.Progress, &t.Result, &t.Error, &created, &updated, &t.Base, &t.Writers)
	setSubject(t.Kind, col, &t.Image, &t.Version)
	t.Created, t.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return t, err
}

// StartTask records a new task for terminal mac. Starting a task that exists for the same
// terminal, kind and image (or version) again (a retried activity) starts it afresh unless it has finished,
// in which case it is left as it is; the same id for anything else is a conflict.
func (inv *Inventory) StartTask(ctx context.Context, t Task, now time.Time) (Task, error) {
	mac, err := NormalizeMAC(t.MAC)
	if err != nil {
		return t, err
	}
	if t.Kind != agentwire.KindCapture && !namesVersion(t.Kind) {
		return t, fmt.Errorf("task kind %q is not capture, deploy, update or probe", t.Kind)
	}
	if (t.Kind == agentwire.KindUpdate) != (t.Base != "") {
		return t, fmt.Errorf("task %s: an update, and only an update, names the version its terminal holds", t.ID)
	}
	if t.ID == "" {
		return t, errors.New("a task needs an id")
	}
	if t.Writers < 0 || t.Writers > MaxTaskWriters {
		return t, fmt.Errorf("task %s: %d terminals writing at once; want 0 to %d", t.ID, t.Writers, MaxTaskWriters)
	}
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return t, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminal "+mac); err != nil {
		return t, err
	}
	old, err := scanTask(tx.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, t.ID))
	switch {
	case err == nil:
		if was := subject(old.Kind, old.Image, old.Version); old.MAC != mac || old.Kind != t.Kind || was != subject(t.Kind, t.Image, t.Version) || old.Base != t.Base {
			return old, fmt.Errorf("task %s exists for %s %s of %s: %w", t.ID, old.Kind, old.MAC, was, ErrConflict)
		}
		if old.Finished() {
			return old, nil
		}
	case !errors.Is(err, sql.ErrNoRows):
		return t, err
	}
	// One task at a time per terminal.
	if busy, err := taskUnderWay(ctx, tx, mac, t.ID, now); err != nil {
		return t, err
	} else if busy != nil {
		return t, busy
	}
	ns := now.UTC().UnixNano()
	if _, err := tx.ExecContext(ctx, `INSERT INTO tasks (id, mac, kind, image, state, created, updated, base, writers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated = excluded.updated, writers = excluded.writers`,
		t.ID, mac, t.Kind, subject(t.Kind, t.Image, t.Version), TaskWaiting, ns, ns, t.Base, t.Writers); err != nil {
		return t, err
	}
	got, err := scanTask(tx.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, t.ID))
	if err != nil {
		return got, err
	}
	return got, tx.Commit()
}

// taskWritersMigration (16) keeps how many terminals a task's deploy or update writes at once,
// as its workflow says: a terminal joins the region's swarm from its first request, before its
// classmates' tasks are set up.
var taskWritersMigration = migration{version: 16, sql: `
ALTER TABLE tasks ADD COLUMN writers BIGINT NOT NULL DEFAULT 0;
`}

// MaxTaskWriters bounds Task.Writers, far above any region's terminals.
const MaxTaskWriters = 100_000

// OpenWritesOf counts the deploys and updates of version that have not finished: a region runs
// a swarm for a version more than one of its terminals writes at once.
func (inv *Inventory) OpenWritesOf(ctx context.Context, version string) (int, error) {
	var n int
	err := inv.db.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE image = ? AND kind IN (?, ?) AND state NOT IN (?, ?, ?)`,
		version, agentwire.KindDeploy, agentwire.KindUpdate, TaskDone, TaskFailed, TaskCanceled).Scan(&n)
	return n, err
}

// TaskUnderWay returns a BusyError naming the task terminal mac is busy with, or nil: a task
// not finished whose boot action still stands (it has not expired). A task whose workflow
// vanished keeps its terminal only until its boot action expires.
func (inv *Inventory) TaskUnderWay(ctx context.Context, mac string, now time.Time) (*BusyError, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	return taskUnderWay(ctx, inv.db, mac, "", now)
}

// taskUnderWay is TaskUnderWay through q, not counting task except.
func taskUnderWay(ctx context.Context, q querier, mac, except string, now time.Time) (*BusyError, error) {
	busy := &BusyError{MAC: mac}
	var created int64
	err := q.QueryRowContext(ctx, `SELECT t.id, t.kind, t.created FROM tasks t JOIN boot_actions b ON b.mac = t.mac AND b.task = t.id
		WHERE t.mac = ? AND t.id <> ? AND t.state IN (?, ?) AND (b.expires = 0 OR b.expires > ?)`,
		mac, except, TaskWaiting, TaskRunning, now.UTC().UnixNano()).Scan(&busy.Task, &busy.Kind, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	busy.Since = time.Unix(0, created).UTC()
	return busy, nil
}

// BusyError refuses a task for a terminal that has another task under way (a conflict: it
// unwraps to ErrConflict). The second task is refused, not queued.
type BusyError struct {
	MAC   string
	Task  string // the task under way
	Kind  agentwire.Kind
	Since time.Time // when it was started
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("terminal %s is busy with task %s (%s, started %s)", e.MAC, e.Task, e.Kind, e.Since.Format(time.RFC3339))
}

func (e *BusyError) Unwrap() error { return ErrConflict }

// Task returns a task by id.
func (inv *Inventory) Task(ctx context.Context, id string) (Task, error) {
	t, err := scanTask(inv.db.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, notFound("task " + id)
	}
	return t, err
}

// Tasks lists the most recent tasks, newest first; mac, if not empty, keeps one terminal's.
func (inv *Inventory) Tasks(ctx context.Context, mac string, limit int) ([]Task, error) {
	if limit <= 0 {
		limit = 100
	}
	q, args := `SELECT `+taskCols+` FROM tasks ORDER BY created DESC LIMIT ?`, []any{limit}
	if mac != "" {
		m, err := NormalizeMAC(mac)
		if err != nil {
			return nil, err
		}
		q, args = `SELECT `+taskCols+` FROM tasks WHERE mac = ? ORDER BY created DESC LIMIT ?`, []any{m, limit}
	}
	rows, err := inv.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// SetWaiter records the task token of the activity waiting for the task and returns the task
// as it is, so a waiter that comes after the agent finished sees the outcome at once.
func (inv *Inventory) SetWaiter(ctx context.Context, id string, token []byte, now time.Time) (Task, error) {
	res, err := inv.db.ExecContext(ctx, `UPDATE tasks SET waiter = ?, updated = ? WHERE id = ?`, token, now.UTC().UnixNano(), id)
	if err != nil {
		return Task{}, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Task{}, notFound("task " + id)
	}
	return inv.Task(ctx, id)
}

// ReportProgress marks an unfinished task running with the agent's latest progress and returns
// it. A finished task is returned unchanged: a late report does not reopen it.
func (inv *Inventory) ReportProgress(ctx context.Context, id, progress string, now time.Time) (Task, error) {
	if _, err := inv.db.ExecContext(ctx, `UPDATE tasks SET state = ?, progress = ?, updated = ? WHERE id = ? AND state IN (?, ?)`,
		TaskRunning, progress, now.UTC().UnixNano(), id, TaskWaiting, TaskRunning); err != nil {
		return Task{}, err
	}
	return inv.Task(ctx, id)
}

// FinishTask ends a task with state done, failed or canceled. The first ending wins: finishing a
// finished task returns it as it was, and changed is false.
func (inv *Inventory) FinishTask(ctx context.Context, id string, state TaskState, result, errMsg string, now time.Time) (t Task, changed bool, err error) {
	if state != TaskDone && state != TaskFailed && state != TaskCanceled {
		return t, false, fmt.Errorf("task state %q is not an ending", state)
	}
	res, err := inv.db.ExecContext(ctx, `UPDATE tasks SET state = ?, result = ?, error = ?, updated = ? WHERE id = ? AND state IN (?, ?)`,
		state, result, errMsg, now.UTC().UnixNano(), id, TaskWaiting, TaskRunning)
	if err != nil {
		return t, false, err
	}
	n, _ := res.RowsAffected()
	t, err = inv.Task(ctx, id)
	if err == nil && n > 0 {
		err = inv.recordDeployed(ctx, t, now)
	}
	return t, n > 0, err
}

// ForgetVersion records that terminal mac's disk holds no known version, and why, if the
// version recorded is still id: a deploy that recorded another since is left alone. It reports
// whether it forgot.
func (inv *Inventory) ForgetVersion(ctx context.Context, mac string, id manifest.ID, why string) (bool, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return false, err
	}
	res, err := inv.db.ExecContext(ctx, `UPDATE terminals SET version = '', version_note = ? WHERE mac = ? AND version = ? AND version != ''`,
		clipNote(why), mac, id.String())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// MarkVersionUnknown records that nobody knows what terminal mac's disk holds, and why (a task
// is writing it).
func (inv *Inventory) MarkVersionUnknown(ctx context.Context, mac, why string) error {
	return inv.setVersion(ctx, mac, "", clipNote(why))
}

// maxVersionNote bounds a version note (it may quote what an agent reported).
const maxVersionNote = 300

func clipNote(s string) string {
	if len(s) > maxVersionNote {
		return strings.ToValidUTF8(s[:maxVersionNote], "") + "…"
	}
	return s
}

// SetVersion records the image version a terminal's disk holds (the zero id: unknown).
func (inv *Inventory) SetVersion(ctx context.Context, mac string, id manifest.ID) error {
	v := ""
	if !id.IsZero() {
		v = id.String()
	}
	return inv.setVersion(ctx, mac, v, "")
}

func (inv *Inventory) setVersion(ctx context.Context, mac, version, note string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	res, err := inv.db.ExecContext(ctx, `UPDATE terminals SET version = ?, version_note = ? WHERE mac = ?`, version, note, mac)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("terminal " + mac)
	}
	return nil
}
