package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"tms/manifest"
	"tms/store"
)

func TestTaskLifecycle(t *testing.T) { forEachBackend(t, testTaskLifecycle) }

func testTaskLifecycle(t *testing.T) {
	ctx := t.Context()
	inv := openInv(t)
	now := time.Unix(1700000000, 0)
	const mac = "52:54:00:00:00:01"
	task := Task{ID: "capture/a/pc1/win", MAC: "52-54-00-00-00-01", Kind: "capture", Image: "win"}
	got, err := inv.StartTask(ctx, task, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != TaskWaiting || got.MAC != mac {
		t.Fatalf("started task = %+v", got)
	}
	if _, err := inv.StartTask(ctx, Task{ID: task.ID, MAC: mac, Kind: "deploy", Image: "win"}, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("same id for another task: err = %v, want ErrConflict", err)
	}
	if _, err := inv.StartTask(ctx, Task{ID: "x", MAC: mac, Kind: "format", Image: "win"}, now); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if _, err := inv.Task(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing task: err = %v", err)
	}

	got, err = inv.ReportProgress(ctx, task.ID, `{"done":1}`, now.Add(time.Second))
	if err != nil || got.State != TaskRunning || got.Progress != `{"done":1}` {
		t.Fatalf("progress: %+v, %v", got, err)
	}
	got, err = inv.SetWaiter(ctx, task.ID, []byte("token"), now)
	if err != nil || string(got.Waiter) != "token" {
		t.Fatalf("waiter: %+v, %v", got, err)
	}
	got, changed, err := inv.FinishTask(ctx, task.ID, TaskDone, `{"version":"v"}`, "", now.Add(2*time.Second))
	if err != nil || !changed || got.State != TaskDone || string(got.Waiter) != "token" {
		t.Fatalf("finish: %+v, %v, %v", got, changed, err)
	}
	// The first ending wins; late reports change nothing.
	got, changed, err = inv.FinishTask(ctx, task.ID, TaskFailed, "", "late", now.Add(3*time.Second))
	if err != nil || changed || got.State != TaskDone || got.Error != "" {
		t.Fatalf("second finish: %+v, %v, %v", got, changed, err)
	}
	if got, err = inv.ReportProgress(ctx, task.ID, `{"done":0}`, now); err != nil || got.State != TaskDone || got.Progress != `{"done":1}` {
		t.Fatalf("late progress reopened the task: %+v, %v", got, err)
	}
	// A retried start of a finished task leaves it finished.
	if got, err = inv.StartTask(ctx, task, now.Add(time.Hour)); err != nil || got.State != TaskDone {
		t.Fatalf("restart of finished task: %+v, %v", got, err)
	}
	if _, _, err := inv.FinishTask(ctx, task.ID, "running", "", "", now); err == nil {
		t.Fatal("running accepted as an ending")
	}

	// A retried start of an unfinished task starts it again.
	task2 := Task{ID: "deploy/a/lab/win/pc1", MAC: mac, Kind: "deploy", Image: "v1", Writers: 30}
	if _, err := inv.StartTask(ctx, Task{ID: "deploy/a/lab/win/pc1", MAC: mac, Kind: "deploy", Image: "v1", Writers: MaxTaskWriters + 1}, now); err == nil {
		t.Fatal("more writers than MaxTaskWriters accepted")
	}
	if got, err := inv.StartTask(ctx, task2, now.Add(time.Minute)); err != nil || got.Writers != 30 {
		t.Fatalf("a deploy's task of 30 writers: %+v, %v", got, err)
	}
	inv.ReportProgress(ctx, task2.ID, `{}`, now.Add(time.Minute))
	if got, err = inv.StartTask(ctx, task2, now.Add(2*time.Minute)); err != nil || got.State != TaskWaiting {
		t.Fatalf("restart of running task: %+v, %v", got, err)
	}
	list, err := inv.Tasks(ctx, mac, 0)
	if err != nil || len(list) != 2 || list[0].ID != task2.ID {
		t.Fatalf("tasks = %+v, %v", list, err)
	}
}

func TestSecondTaskForABusyTerminalIsRefused(t *testing.T) {
	forEachBackend(t, testSecondTaskForABusyTerminalIsRefused)
}

func testSecondTaskForABusyTerminalIsRefused(t *testing.T) {
	ctx := t.Context()
	inv := openInv(t)
	now := time.Unix(1700000000, 0).UTC()
	const mac = "52:54:00:00:00:01"
	if err := inv.Enroll(ctx, mac, "pc1"); err != nil {
		t.Fatal(err)
	}
	first := Task{ID: "capture/a/pc1/win@run1", MAC: mac, Kind: "capture", Image: "win"}
	start := func(id string, at time.Time) error {
		_, err := inv.StartTask(ctx, Task{ID: id, MAC: mac, Kind: "deploy", Version: "v"}, at)
		return err
	}
	if _, err := inv.StartTask(ctx, first, now); err != nil {
		t.Fatal(err)
	}
	setAction := func(task string, expires time.Time) {
		t.Helper()
		if err := inv.SetBootAction(ctx, mac, BootAction{Action: "capture", Task: task, Image: "win", Expires: expires}); err != nil {
			t.Fatal(err)
		}
	}
	setAction(first.ID, now.Add(time.Hour))

	var busy *BusyError
	if err := start("deploy/a/pc1/win@run2", now.Add(time.Minute)); !errors.As(err, &busy) || !errors.Is(err, ErrConflict) ||
		busy.Task != first.ID || busy.Kind != "capture" || !busy.Since.Equal(now) {
		t.Fatalf("second task while the first waits: %v (%+v)", err, busy)
	}
	// TaskUnderWay names it too, and lets go when its boot action expires.
	if b, err := inv.TaskUnderWay(ctx, mac, now.Add(time.Minute)); err != nil || b == nil || b.Task != first.ID {
		t.Fatalf("TaskUnderWay while the first waits: %+v, %v", b, err)
	}
	if b, err := inv.TaskUnderWay(ctx, mac, now.Add(2*time.Hour)); err != nil || b != nil {
		t.Fatalf("TaskUnderWay after the boot action expired: %+v, %v", b, err)
	}
	// A retried start of the first task itself is no conflict.
	if _, err := inv.StartTask(ctx, first, now.Add(time.Minute)); err != nil {
		t.Fatalf("retried start of the task under way: %v", err)
	}
	// A boot action that expired frees the terminal (its workflow is gone without finishing).
	if err := start("deploy/a/pc1/win@run3", now.Add(2*time.Hour)); err != nil {
		t.Fatalf("after the first task's boot action expired: %v", err)
	}
	setAction("deploy/a/pc1/win@run3", now.Add(3*time.Hour))
	// A finished task frees it at once.
	if _, _, err := inv.FinishTask(ctx, "deploy/a/pc1/win@run3", TaskCanceled, "", "canceled", now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := start("deploy/a/pc1/win@run4", now.Add(2*time.Hour)); err != nil {
		t.Fatalf("after the task under way finished: %v", err)
	}
}

// A disk check about an old version does not forget the version a deploy recorded since.
func TestForgetVersionOnlyTheOneChecked(t *testing.T) {
	forEachBackend(t, testForgetVersionOnlyTheOneChecked)
}

func testForgetVersionOnlyTheOneChecked(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	const mac = "52:54:00:00:00:01"
	if err := inv.Enroll(ctx, mac, "pc1"); err != nil {
		t.Fatal(err)
	}
	v1, v2 := manifest.BLAKE3.Sum([]byte("v1")), manifest.BLAKE3.Sum([]byte("v2"))
	if err := inv.SetVersion(ctx, mac, v2); err != nil {
		t.Fatal(err)
	}
	if forgot, err := inv.ForgetVersion(ctx, mac, v1, "stale"); err != nil || forgot {
		t.Fatalf("forgetting v1 while v2 is recorded: %v, %v", forgot, err)
	}
	if got, _ := inv.Terminal(ctx, mac); got.Version != v2 {
		t.Fatalf("version after a stale forget: %v", got.Version)
	}
	if forgot, err := inv.ForgetVersion(ctx, mac, v2, "chunk 0 differs"); err != nil || !forgot {
		t.Fatalf("forgetting v2: %v, %v", forgot, err)
	}
	if got, _ := inv.Terminal(ctx, mac); !got.Version.IsZero() || got.VersionNote != "chunk 0 differs" {
		t.Fatalf("version after forgetting: %v (%q)", got.Version, got.VersionNote)
	}
	// A version recorded again clears the note.
	if err := inv.SetVersion(ctx, mac, v1); err != nil {
		t.Fatal(err)
	}
	if got, _ := inv.Terminal(ctx, mac); got.Version != v1 || got.VersionNote != "" {
		t.Fatalf("version recorded again: %v (%q)", got.Version, got.VersionNote)
	}
	if forgot, err := inv.ForgetVersion(ctx, mac, manifest.ID{}, "x"); err != nil || forgot {
		t.Fatalf("forgetting an unknown version: %v, %v", forgot, err)
	}
}
