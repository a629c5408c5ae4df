package workflows

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
)

// planStart is when the plan tests' workflows start: 12:00 UTC.
var planStart = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// planEnv runs PlanImage with ResolvePlan answering for regions in UTC, the regions making
// room (their calls in planRooms) unless noRoom names them, and central's service workflow
// taking every report (into planReports).
func planEnv(t *testing.T, regions ...string) *testsuite.TestWorkflowEnvironment {
	planMu.Lock()
	planReports, planRooms = nil, nil
	planMu.Unlock()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(planStart)
	env.RegisterActivity(&activities.Central{})
	env.RegisterActivity(&activities.Region{})
	env.RegisterWorkflow(ShareImage)
	env.RegisterWorkflow(PlanImageRegion)
	zones := make([]string, len(regions))
	for i := range zones {
		zones[i] = "UTC"
	}
	env.OnActivity(c.ResolvePlan, mock.Anything, mock.Anything).
		Return(activities.ResolvePlanResult{Version: version, Name: "exam", StoredBytes: 1 << 30, Zones: zones}, nil)
	env.OnActivity(r.MakeRoom, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.MakeRoomInput) (activities.MakeRoomResult, error) {
		planMu.Lock()
		defer planMu.Unlock()
		planRooms = append(planRooms, in)
		if noRoom {
			return activities.MakeRoomResult{}, activities.ErrNoRoom.New("region room3 needs 1.0 GiB for exam@91bc0000, has 0.2 GiB free under its high-water mark; held: win11 (pinned, 2.1 GiB)", nil)
		}
		return activities.MakeRoomResult{}, nil
	})
	env.OnSignalExternalWorkflow(mock.Anything, CentralServiceID, "", SignalPlan, mock.Anything).Return(func(_, _, _, _ string, arg any) error {
		planMu.Lock()
		defer planMu.Unlock()
		planReports = append(planReports, arg.(PlanStatus))
		return nil
	})
	return env
}

// planReports are the reports the last planEnv's plan sent to central; planRooms its calls of
// MakeRoom; noRoom makes every region answer MakeRoom with NoRoom.
var (
	planMu      sync.Mutex
	planReports []PlanStatus
	planRooms   []activities.MakeRoomInput
	noRoom      bool
)

// shares records the shares a plan started: when, and for which region.
type shares struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (s *shares) add(env *testsuite.TestWorkflowEnvironment, in ShareImageInput) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string][]time.Time{}
	}
	s.at[in.Target] = append(s.at[in.Target], env.Now())
}

func runPlan(t *testing.T, env *testsuite.TestWorkflowEnvironment, in PlanInput) (PlanStatus, error) {
	t.Helper()
	env.ExecuteWorkflow(PlanImage, in)
	if !env.IsWorkflowCompleted() {
		t.Fatal("the plan did not complete")
	}
	var st PlanStatus
	err := env.GetWorkflowError()
	if err == nil {
		if err := env.GetWorkflowResult(&st); err != nil {
			t.Fatal(err)
		}
	}
	return st, err
}

func TestPlanSharesToEveryRegionAndEndsAtBy(t *testing.T) {
	env := planEnv(t, "room3", "room4")
	var sh shares
	env.OnWorkflow(ShareImage, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in ShareImageInput) (ShareImageResult, error) {
		if in.Image != "exam@"+version || in.Rate != 5<<20 {
			return ShareImageResult{}, errors.New("wrong share: " + in.Image)
		}
		sh.add(env, in)
		return ShareImageResult{Version: version, Path: PathPeer}, nil
	})
	by := planStart.Add(24 * time.Hour)
	st, err := runPlan(t, env, PlanInput{Name: "exam-week", Image: "exam", Regions: []string{"room3", "room4"}, By: by, Rate: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.NotReady()) != 0 || !st.Ended || st.Version != version {
		t.Fatalf("%+v", st)
	}
	for _, r := range st.Regions {
		if r.State != PlanReady || r.Attempts != 1 || r.Share != "plan/exam-week/"+r.Region+"/1" {
			t.Errorf("%+v", r)
		}
	}
	if len(sh.at["room3"]) != 1 || len(sh.at["room4"]) != 1 {
		t.Fatalf("shares: %v", sh.at)
	}
	if !env.Now().Equal(by) {
		t.Errorf("the plan ended at %v, want at By %v (it keeps what it brought held until then)", env.Now(), by)
	}
	// Each region made room for the version's stored bytes and held it for the plan until By
	// and the grace, before its share.
	if len(planRooms) != 2 {
		t.Fatalf("MakeRoom calls: %+v", planRooms)
	}
	for _, in := range planRooms {
		if in.Version != version || in.Bytes != 1<<30 || in.Holder != "plan/exam-week" || !in.Until.Equal(by.Add(planHoldGrace)) {
			t.Errorf("MakeRoom %+v", in)
		}
	}
}

// A region that cannot make room shares nothing and says what holds the space; a plan longer
// than a hold may last renews its holds.
func TestPlanWithoutRoomSharesNothingAndLongPlansRenewTheirHolds(t *testing.T) {
	env := planEnv(t, "room3")
	noRoom = true
	defer func() { noRoom = false }()
	env.OnWorkflow(ShareImage, mock.Anything, mock.Anything).Return(ShareImageResult{}, errors.New("no share may start without room"))
	_, err := runPlan(t, env, PlanInput{Name: "full", Image: "exam", Regions: []string{"room3"}, By: planStart.Add(time.Hour)})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message(), "room3 retrying (region room3 needs 1.0 GiB for exam@91bc0000, has 0.2 GiB free under its high-water mark; held: win11 (pinned, 2.1 GiB))") {
		t.Fatalf("got %v, want NotReady saying what holds the space", err)
	}

	noRoom = false
	env = planEnv(t, "room3")
	env.OnWorkflow(ShareImage, mock.Anything, mock.Anything).Return(ShareImageResult{Version: version}, nil)
	if _, err := runPlan(t, env, PlanInput{Name: "term", Image: "exam", Regions: []string{"room3"}, By: planStart.Add(20 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n := len(planRooms); n < 19 || n > 21 {
		t.Fatalf("a 20-day plan called MakeRoom %d times, want its first call and one renewal a day", n)
	}
}

func TestPlanSharesInsideItsWindowOnly(t *testing.T) {
	env := planEnv(t, "room3")
	var sh shares
	// The first share outlasts the window (22:00-22:30) and is canceled at 22:30; the second,
	// in the next night's window, ends.
	calls := 0
	env.OnWorkflow(ShareImage, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in ShareImageInput) (ShareImageResult, error) {
		sh.add(env, in)
		calls++
		if calls == 1 {
			if err := workflow.Sleep(ctx, time.Hour); err != nil {
				return ShareImageResult{}, err
			}
		}
		return ShareImageResult{Version: version}, nil
	})
	st, err := runPlan(t, env, PlanInput{Name: "nightly", Image: "exam", Regions: []string{"room3"}, By: planStart.Add(48 * time.Hour), Window: "22:00-22:30"})
	if err != nil {
		t.Fatal(err)
	}
	got := sh.at["room3"]
	want := []time.Time{planStart.Add(10 * time.Hour), planStart.Add(34 * time.Hour)}
	if len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Fatalf("shares started at %v, want %v (each at its window's opening)", got, want)
	}
	if r := st.Regions[0]; r.State != PlanReady || r.Attempts != 2 || !r.Ready.Equal(want[1]) {
		t.Fatalf("%+v", r)
	}
}

func TestPlanRetriesAFailedShareAndReportsWhatIsNotReady(t *testing.T) {
	env := planEnv(t, "room3", "room4")
	env.OnWorkflow(ShareImage, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in ShareImageInput) (ShareImageResult, error) {
		if in.Target == "room4" {
			return ShareImageResult{}, activities.ErrShareFailed.New("could not bring exam to region room4: region room4 is offline", nil)
		}
		return ShareImageResult{Version: version}, nil
	})
	by := planStart.Add(2 * time.Hour)
	st, err := runPlan(t, env, PlanInput{Name: "exam-week", Image: "exam", Regions: []string{"room3", "room4"}, By: by, Margin: 30 * time.Minute})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != string(activities.ErrNotReady) || !strings.Contains(ae.Message(), "room4 retrying (could not bring exam to region room4: region room4 is offline)") {
		t.Fatalf("got %v, want NotReady naming room4 and why", err)
	}
	if err := ae.Details(&st); err != nil {
		t.Fatal(err)
	}
	if got := st.NotReady(); len(got) != 1 || got[0] != "room4" {
		t.Fatalf("not ready: %v", got)
	}
	// 5, 10, 20, 40 minutes, then an hour: 2 hours hold 5 or 6 attempts.
	if r := st.Regions[1]; r.Attempts < 5 || r.Attempts > 6 {
		t.Errorf("room4 was tried %d times in 2 h, want 5 or 6 (backing off from %v)", r.Attempts, planRetry)
	}
	// Central heard of the check at By - 30 min, and of the end.
	var checked, endedSeen bool
	for _, rep := range planReports {
		if !rep.Checked.IsZero() && !rep.Ended && rep.Checked.Equal(by.Add(-30*time.Minute)) && st.Late(rep.Regions[1]) {
			checked = true
		}
		endedSeen = endedSeen || rep.Ended
	}
	if !checked || !endedSeen {
		t.Fatalf("reports to central lack the readiness check or the end: %+v", planReports)
	}
}

func TestPlanRefusesBadInput(t *testing.T) {
	now := planStart
	for _, tc := range []struct {
		in   PlanInput
		want string
	}{
		{PlanInput{Name: "Exam", Image: "exam", Regions: []string{"a"}, By: now.Add(time.Hour)}, "plan name"},
		{PlanInput{Name: "x", Regions: []string{"a"}, By: now.Add(time.Hour)}, "no image"},
		{PlanInput{Name: "x", Image: "exam", By: now.Add(time.Hour)}, "no regions"},
		{PlanInput{Name: "x", Image: "exam", Regions: []string{"a", "a"}, By: now.Add(time.Hour)}, "named twice"},
		{PlanInput{Name: "x", Image: "exam", Regions: []string{"a"}, By: now.Add(-time.Hour)}, "is in the past"},
		{PlanInput{Name: "x", Image: "exam", Regions: []string{"a"}, By: now.Add(time.Hour), Window: "22-06"}, "window"},
		{PlanInput{Name: "x", Image: "exam", Regions: []string{"a"}, By: now.Add(time.Hour), Rate: -1}, "negative rate"},
	} {
		if err := CheckPlan(tc.in, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.in, err, tc.want)
		}
	}
	env := planEnv(t, "a")
	_, err := runPlan(t, env, PlanInput{Name: "x", Image: "exam", Regions: []string{"a"}, By: planStart.Add(-time.Minute)})
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || ae.Type() != string(activities.ErrBadInput) {
		t.Fatalf("got %v, want BadInput", err)
	}
}

// A plan of many regions runs each region in a workflow of its own and reports to central a
// few times, not at every region's every change (each report carries every region's state:
// two per region made a 1,000-region plan's history pass Temporal's 50 MB).
func TestPlanOfManyRegionsRunsEachInItsOwnWorkflowAndReportsToCentralAFewTimes(t *testing.T) {
	const n = 200
	regions := make([]string, n)
	for i := range regions {
		regions[i] = fmt.Sprintf("room%03d", i)
	}
	env := planEnv(t, regions...)
	var mu sync.Mutex
	parents := map[string]int{}
	env.OnWorkflow(ShareImage, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in ShareImageInput) (ShareImageResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if p := workflow.GetInfo(ctx).ParentWorkflowExecution; p != nil {
			parents[p.ID]++
		}
		return ShareImageResult{Version: version, Path: PathPeer}, nil
	})
	by := planStart.Add(24 * time.Hour)
	st, err := runPlan(t, env, PlanInput{Name: "district", Image: "exam", Regions: regions, By: by})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Regions) != n || len(st.NotReady()) != 0 || !st.Ended {
		t.Fatalf("not ready: %v; ended %v", st.NotReady(), st.Ended)
	}
	for _, r := range regions[:3] {
		if parents[PlanRegionWorkflowID("district", r)] != 1 {
			t.Errorf("the shares' parents: %v", parents)
		}
	}
	planMu.Lock()
	defer planMu.Unlock()
	if len(planReports) > 10 {
		t.Errorf("%d reports to central for %d regions, want at most 10", len(planReports), n)
	}
	if last := planReports[len(planReports)-1]; !last.Ended || len(last.NotReady()) != 0 || len(last.Regions) != n {
		t.Errorf("the last report: ended %v, not ready %v", last.Ended, last.NotReady())
	}
}

// TestPlanContinuesAsNewWithEveryReportItTook sends a continued plan a region's report every
// 10 s while central takes 20 s to take each of the plan's own reports, and has it continue as
// new from 35 s on: the plan waits for its reports before continuing as new, reports
// come in meanwhile, and every report sent before it continued must be in what it carries.
// A plan that continued after its second wait without a last look lost the one that came in
// it (found at 1,000 regions).
func TestPlanContinuesAsNewWithEveryReportItTook(t *testing.T) {
	defer func(f func(workflow.Context) bool) { planTooLong = f }(planTooLong)
	planTooLong = func(ctx workflow.Context) bool { return !workflow.Now(ctx).Before(planStart.Add(35 * time.Second)) }
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(planStart)
	env.RegisterWorkflow(PlanImageRegion)
	env.OnSignalExternalWorkflow(mock.Anything, CentralServiceID, "", SignalPlan, mock.Anything).After(20 * time.Second).Return(nil)
	by := planStart.Add(24 * time.Hour)
	carry := &PlanCarry{Status: PlanStatus{Name: "district", Image: "exam", Version: version, By: by,
		Regions: []PlanRegion{{Region: "room1", State: PlanSharing}}}, Seq: []int{1}, Done: []bool{false}, Margin: DefaultPlanMargin}
	var mu sync.Mutex
	sent := 1
	for i := 1; i <= 60; i++ {
		env.RegisterDelayedCallback(func() {
			mu.Lock()
			defer mu.Unlock()
			sent++
			env.SignalWorkflow(SignalPlanRegion, PlanRegionReport{PlanRegion: PlanRegion{Region: "room1", State: PlanSharing, Detail: fmt.Sprint(sent)}, Seq: sent})
		}, time.Duration(i)*10*time.Second)
	}
	env.ExecuteWorkflow(PlanImage, PlanInput{Name: "district", Image: "exam", By: by, Carry: carry})
	var can *workflow.ContinueAsNewError
	if err := env.GetWorkflowError(); !errors.As(err, &can) {
		t.Fatalf("the plan ended with %v, want it to continue as new", err)
	}
	var next PlanInput
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if next.Carry == nil || next.Carry.Seq[0] != sent || next.Carry.Status.Regions[0].Detail != fmt.Sprint(sent) {
		t.Fatalf("%d reports sent before the plan continued; it carries %+v", sent, next.Carry)
	}
	if sent < 3 {
		t.Fatalf("only %d reports came before the plan continued: the test shows nothing", sent)
	}
}
