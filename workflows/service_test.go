package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
)

// sendUpdate sends update name with in and records the validator's refusal or the result.
func sendUpdate[T any](env *testsuite.TestWorkflowEnvironment, name, id string, in any, got *T, gotErr *error) {
	env.UpdateWorkflow(name, id, &testsuite.TestUpdateCallback{
		OnAccept: func() {},
		OnReject: func(err error) { *gotErr = err },
		OnComplete: func(v any, err error) {
			if err != nil {
				*gotErr = err
				return
			}
			if r, ok := v.(T); ok {
				*got = r
			}
		},
	}, in)
}

func TestCentralServiceKeepsReportsAndAnswersReads(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(CentralService)
	env.OnActivity(c.ListRegions, mock.Anything).Return(activities.ListRegionsResult{Regions: []activities.RegionInfo{{ID: "region-a"}, {ID: "region-c"}}}, nil)
	var st CentralStatus
	var regions CentralAdminResult
	var badErr, regionsErr error
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "region-b", Terminals: 3})
		env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "region-a", Used: 5, Capacity: 10})
		env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "../etc"}) // dropped
	}, time.Second)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "region-b", Terminals: 4}) // replaces the first
	}, 2*time.Second)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryStatus)
		if err != nil {
			t.Error(err)
		} else if err := v.Get(&st); err != nil {
			t.Error(err)
		}
		sendUpdate(env, UpdateRead, "u1", CentralAdminInput{Op: "terminals"}, &CentralAdminResult{}, &badErr)
		sendUpdate(env, UpdateRead, "u2", CentralAdminInput{Op: "regions"}, &regions, &regionsErr)
	}, 3*time.Second)
	env.RegisterDelayedCallback(env.CancelWorkflow, 4*time.Second)
	env.ExecuteWorkflow(CentralService, CentralServiceInput{})

	if len(st.Reports) != 2 || st.Reports[0].Region != "region-a" || st.Reports[1].Region != "region-b" || st.Reports[1].Terminals != 4 ||
		st.Reports[0].Received.IsZero() {
		t.Errorf("status: %+v", st.Reports)
	}
	if badErr == nil || !strings.Contains(badErr.Error(), `"terminals" is not a central listing`) {
		t.Errorf("read update with a region op: %v", badErr)
	}
	if regionsErr != nil || len(regions.Regions) != 2 || regions.Regions[0].Used != 5 || regions.Regions[0].Capacity != 10 || regions.Regions[1].Used != 0 {
		t.Errorf("regions: %+v, %v", regions.Regions, regionsErr)
	}
}

func TestCentralServiceContinuesAsNewWithItsReports(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(CentralService)
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "region-b", Terminals: 1})
	}, time.Second)
	env.RegisterDelayedCallback(func() {
		env.SetCurrentHistoryLength(serviceHistoryLimit + 1)
		env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "region-a", Terminals: 2})
	}, 2*time.Second)
	env.ExecuteWorkflow(CentralService, CentralServiceInput{})
	err := env.GetWorkflowError()
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		t.Fatalf("want a continue-as-new past %d history events, got %v", serviceHistoryLimit, err)
	}
	var next CentralServiceInput
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
		t.Fatal(err)
	}
	if len(next.Reports) != 2 || next.Reports[0].Region != "region-a" || next.Reports[1].Terminals != 1 {
		t.Errorf("reports carried over: %+v", next.Reports)
	}
}

// oldRegionService runs RegionService as a run recorded before the reports came from the
// region's worker (GetVersion "reports-from-the-worker"): it reports every interval itself.
func oldRegionService(t *testing.T) *testsuite.TestWorkflowEnvironment {
	env := newEnv(t)
	env.RegisterWorkflow(RegionService)
	env.OnGetVersion("reports-from-the-worker", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	return env
}

func TestRegionServiceReportsAndRefusesOpsUnderTheWrongName(t *testing.T) {
	env := oldRegionService(t)
	env.OnActivity(r.Status, mock.Anything, mock.Anything).Return(activities.RegionStatus{Summary: activities.RegionSummary{
		Region: "region-a", Terminals: 3, Interval: 5 * time.Second}}, nil)
	var sent []activities.RegionSummary
	env.OnSignalExternalWorkflow(mock.Anything, CentralServiceID, "", SignalReport, mock.Anything).Return(
		func(_, _, _, _ string, arg any) error {
			sent = append(sent, arg.(activities.RegionSummary))
			return nil
		})
	env.OnActivity(r.Admin, mock.Anything, activities.AdminInput{Op: activities.OpTerminals}).Return(
		activities.AdminResult{Terminals: []activities.TerminalInfo{{Name: "pc1"}}}, nil)
	var changeAsRead, readAsChange, unknown, readErr error
	var listed activities.AdminResult
	env.RegisterDelayedCallback(func() {
		sendUpdate(env, UpdateRead, "u1", activities.AdminInput{Op: activities.OpEnroll}, &activities.AdminResult{}, &changeAsRead)
		sendUpdate(env, UpdateChange, "u2", activities.AdminInput{Op: activities.OpTerminals}, &activities.AdminResult{}, &readAsChange)
		sendUpdate(env, UpdateChange, "u3", activities.AdminInput{Op: "format-disks"}, &activities.AdminResult{}, &unknown)
		sendUpdate(env, UpdateRead, "u4", activities.AdminInput{Op: activities.OpTerminals}, &listed, &readErr)
	}, time.Second)
	env.RegisterDelayedCallback(env.CancelWorkflow, 12*time.Second)
	env.ExecuteWorkflow(RegionService, RegionServiceInput{Region: "region-a", Interval: time.Hour})

	// The region's configured interval (5 s, from its Status) wins over the input's hour: three
	// reports in 12 s.
	if len(sent) != 3 || sent[0].Terminals != 3 || sent[0].Interval != 5*time.Second {
		t.Errorf("reports sent: %+v", sent)
	}
	for name, err := range map[string]error{"change op as read": changeAsRead, "read op as change": readAsChange, "unknown op": unknown} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if changeAsRead != nil && !strings.Contains(changeAsRead.Error(), `"enroll" changes the region's inventory: send it as a "change" update`) {
		t.Errorf("change op as read: %v", changeAsRead)
	}
	if readErr != nil || len(listed.Terminals) != 1 {
		t.Errorf("read terminals: %+v, %v", listed, readErr)
	}
}

// A report of a store above its high-water mark makes the region evict; one below does not.
func TestRegionServiceEvictsAboveHighWater(t *testing.T) {
	for _, tc := range []struct {
		name  string
		used  int64
		evict int
	}{
		{"above high water", 95, 2},
		{"at high water", 90, 0},
		{"below", 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := oldRegionService(t)
			env.OnActivity(r.Status, mock.Anything, mock.Anything).Return(activities.RegionStatus{Summary: activities.RegionSummary{
				Region: "region-a", Interval: 5 * time.Second, Used: tc.used, Capacity: 100, HighWater: 0.9, LowWater: 0.8}}, nil)
			env.OnSignalExternalWorkflow(mock.Anything, CentralServiceID, "", SignalReport, mock.Anything).Return(nil)
			evicted := 0
			env.OnActivity(r.EvictIfFull, mock.Anything, mock.Anything).Return(func(_ context.Context, _ activities.EvictInput) (activities.MakeRoomResult, error) {
				evicted++
				return activities.MakeRoomResult{Evicted: []activities.EvictedImage{{Name: "old"}}}, nil
			})
			env.RegisterDelayedCallback(env.CancelWorkflow, 7*time.Second)
			env.ExecuteWorkflow(RegionService, RegionServiceInput{Region: "region-a", Interval: 5 * time.Second})
			if evicted != tc.evict {
				t.Errorf("evictions = %d, want %d (one per report)", evicted, tc.evict)
			}
		})
	}
}

// TestRegionServiceEvictsWhenAsked checks the service workflow of today: it takes no status and
// sends no report (the region's worker does), answers reads, and runs an eviction when asked,
// the requests that come while one runs making one more.
func TestRegionServiceEvictsWhenAsked(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(RegionService)
	evicted := 0
	env.OnActivity(r.EvictIfFull, mock.Anything, mock.Anything).After(10 * time.Minute).Return(func(context.Context, activities.EvictInput) (activities.MakeRoomResult, error) {
		evicted++
		return activities.MakeRoomResult{}, nil
	})
	env.OnActivity(r.Admin, mock.Anything, activities.AdminInput{Op: activities.OpTerminals}).Return(
		activities.AdminResult{Terminals: []activities.TerminalInfo{{Name: "pc1"}}}, nil)
	var listed activities.AdminResult
	var readErr error
	for _, at := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute} {
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(SignalEvict, nil) }, at)
	}
	env.RegisterDelayedCallback(func() {
		sendUpdate(env, UpdateRead, "u1", activities.AdminInput{Op: activities.OpTerminals}, &listed, &readErr)
	}, 4*time.Minute)
	env.RegisterDelayedCallback(env.CancelWorkflow, 2*time.Hour)
	env.ExecuteWorkflow(RegionService, RegionServiceInput{Region: "region-a", Interval: 5 * time.Second})
	if evicted != 2 {
		t.Errorf("evictions = %d, want 2 (one, then one for the two asked while it ran)", evicted)
	}
	if readErr != nil || len(listed.Terminals) != 1 {
		t.Errorf("read terminals: %+v, %v", listed, readErr)
	}
	env.AssertNotCalled(t, "Status", mock.Anything, mock.Anything)
}

// Versions a region's report no longer lists leave central's catalog of locations; a first
// report, or one whose list was cut short, forgets nothing.
func TestCentralServiceForgetsVersionsARegionNoLongerHolds(t *testing.T) {
	env := newEnv(t)
	env.RegisterWorkflow(CentralService)
	var forgot []activities.ForgetInput
	env.OnActivity(c.ForgetLocation, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ForgetInput) error {
		forgot = append(forgot, in)
		return nil
	})
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	images := func(vs ...string) []activities.ImageDescriptor {
		var out []activities.ImageDescriptor
		for _, v := range vs {
			out = append(out, activities.ImageDescriptor{Name: "lab", Version: v})
		}
		return out
	}
	report := func(after time.Duration, count int, vs ...string) {
		env.RegisterDelayedCallback(func() {
			env.SignalWorkflow(SignalReport, activities.RegionSummary{Region: "region-b", At: at.Add(after), Images: images(vs...), ImageCount: count,
				ImagesListed: count >= 0})
		}, after)
	}
	report(time.Second, 3, "a", "b", "c")
	report(2*time.Second, 2, "a", "c") // b went
	report(3*time.Second, 5, "a")      // cut short: nothing to tell
	report(4*time.Second, 2, "a", "c") // whole again, after a cut list: nothing either
	report(5*time.Second, 0)           // everything went
	env.RegisterDelayedCallback(env.CancelWorkflow, 6*time.Second)
	env.ExecuteWorkflow(CentralService, CentralServiceInput{})
	if len(forgot) != 2 || forgot[0].Region != "region-b" || strings.Join(forgot[0].Versions, ",") != "b" || strings.Join(forgot[1].Versions, ",") != "a,c" {
		t.Fatalf("forgot %+v, want b, then a,c", forgot)
	}
}
