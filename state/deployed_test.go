package state

import (
	"testing"
	"time"

	"tms/agentwire"
)

func TestLastDeployedRecordsFinishedDeploysAndUpdates(t *testing.T) {
	forEachBackend(t, testLastDeployedRecordsFinishedDeploysAndUpdates)
}

func testLastDeployedRecordsFinishedDeploysAndUpdates(t *testing.T) {
	ctx := t.Context()
	inv := openInv(t)
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	const v1, v2, v3 = "1111", "2222", "3333"
	for i, tc := range []struct {
		kind    agentwire.Kind
		version string
		end     TaskState
		at      time.Time
	}{
		{agentwire.KindDeploy, v1, TaskDone, now},
		{agentwire.KindDeploy, v1, TaskDone, now.Add(2 * time.Hour)},
		{agentwire.KindUpdate, v1, TaskDone, now.Add(time.Hour)}, // an older ending does not move it back
		{agentwire.KindUpdate, v2, TaskDone, now.Add(3 * time.Hour)},
		{agentwire.KindDeploy, v3, TaskFailed, now},   // failed: not deployed
		{agentwire.KindDeploy, v3, TaskCanceled, now}, // canceled: neither
	} {
		mac := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04", "52:54:00:00:00:05", "52:54:00:00:00:06"}[i]
		task, err := inv.StartTask(ctx, Task{ID: "deploy/a/" + mac + "/" + tc.version, MAC: mac, Kind: tc.kind, Version: tc.version, Base: base(tc.kind)}, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := inv.FinishTask(ctx, task.ID, tc.end, "", "", tc.at); err != nil {
			t.Fatal(err)
		}
	}
	got, err := inv.LastDeployed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[v1].Equal(now.Add(2*time.Hour)) || !got[v2].Equal(now.Add(3*time.Hour)) {
		t.Fatalf("LastDeployed = %v, want v1 at +2h and v2 at +3h only", got)
	}
}

// base is the version an update's terminal holds (an update, and only an update, names one).
func base(k agentwire.Kind) string {
	if k == agentwire.KindUpdate {
		return "0000"
	}
	return ""
}
