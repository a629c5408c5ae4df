package workflows

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/manifest"
	"tms/settings"
)

// A pre-distribution plan sends an image to regions ahead of need: `tms plan create exam-week
// --image exam --regions room3,room4 --by "2026-12-07 07:00" --window 22:00-06:00 --rate 20MB/s`.
// Its workflow (PlanImage, id plan/NAME, on central's queue) shares the image with each region
// inside the window (in that region's zone), at no more than the rate, retrying in the next
// window when a region was offline or the window closed first; at By minus the margin it checks
// each region's readiness and reports those not ready (the plan's progress, central's status,
// `tms status`, the metric tms_plan_regions{state="not-ready"}); it ends at By.

// PlanWorkflowID is the id of plan name's workflow.
func PlanWorkflowID(name string) string { return "plan/" + name }

// planName is the form of a plan's name.
var planName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Bounds of a plan.
const (
	// MaxPlanRegions bounds the regions of one plan.
	MaxPlanRegions = 1000
	// DefaultPlanMargin is how long before By a plan checks its regions' readiness when the
	// plan does not say (capped at half the time to By).
	DefaultPlanMargin = 30 * time.Minute
	// planRetry is how long a plan waits after a failed share before it tries again (in the
	// same window if it is still open), doubled after each failure in a row up to
	// planRetryMax: a region offline for a week costs a plan a few hundred attempts, not
	// thousands, and its history stays far below Temporal's limits.
	planRetry    = 5 * time.Minute
	planRetryMax = time.Hour
)

// PlanInput is a pre-distribution plan.
type PlanInput struct {
	Name    string
	Image   string // NAME, NAME:TAG or NAME@VERSION: resolved once, when the plan starts
	Regions []string
	// By is when the image must be verified in every region.
	By time.Time
	// Window is HH:MM-HH:MM in each region's zone (settings.ParseWindow); empty: any time.
	Window string
	// Rate caps each share (bytes a second); 0: only the regions' own caps.
	Rate int64
	// Margin is how long before By the readiness check runs (0: DefaultPlanMargin).
	Margin time.Duration
	// Origin says who made the plan: empty for an admin's, "schedule:NAME" for one made for a
	// schedule's firing.
	Origin string
	// Carry is the plan's state carried across continue-as-new (nil when a plan starts).
	Carry *PlanCarry `json:",omitempty"`
}

// CheckPlan checks a plan before it starts: the CLI and the workflow call it, so a bad plan is
// refused with the same words wherever it comes from. now is the time it is checked at.
func CheckPlan(in PlanInput, now time.Time) error {
	if !planName.MatchString(in.Name) {
		return fmt.Errorf("plan name %q: want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63", in.Name)
	}
	if strings.TrimSpace(in.Image) == "" {
		return fmt.Errorf("plan %s: no image", in.Name)
	}
	if len(in.Regions) == 0 {
		return fmt.Errorf("plan %s: no regions", in.Name)
	}
	if len(in.Regions) > MaxPlanRegions {
		return fmt.Errorf("plan %s: %d regions, more than %d", in.Name, len(in.Regions), MaxPlanRegions)
	}
	seen := map[string]bool{}
	for _, r := range in.Regions {
		if seen[r] {
			return fmt.Errorf("plan %s: region %s named twice", in.Name, r)
		}
		seen[r] = true
	}
	if in.By.IsZero() {
		return fmt.Errorf("plan %s: no --by time", in.Name)
	}
	if !in.By.After(now) {
		return fmt.Errorf("plan %s: --by %s is in the past (it is %s)", in.Name, in.By.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if in.Window != "" {
		if _, err := settings.ParseWindow(in.Window); err != nil {
			return fmt.Errorf("plan %s: %v", in.Name, err)
		}
	}
	if in.Rate < 0 {
		return fmt.Errorf("plan %s: a negative rate", in.Name)
	}
	if in.Rate != 0 && (in.Rate < settings.MinRate || in.Rate > settings.MaxRate) {
		return fmt.Errorf("plan %s: a rate of %s; want %s to %s", in.Name, settings.FormatRate(in.Rate), settings.FormatRate(settings.MinRate), settings.FormatRate(settings.MaxRate))
	}
	if in.Margin < 0 {
		return fmt.Errorf("plan %s: a negative margin", in.Name)
	}
	return nil
}

// PlanState is where one region of a plan stands.
type PlanState string

// Plan states.
const (
	PlanWaiting  PlanState = "waiting"  // for the window to open
	PlanSharing  PlanState = "sharing"  // its share runs
	PlanRetrying PlanState = "retrying" // its last share failed (Detail says why); it tries again
	PlanReady    PlanState = "ready"    // the version is verified in the region
)

// PlanRegion is one region of a plan.
type PlanRegion struct {
	Region string
	State  PlanState
	// Detail says what it waits for or why the last attempt failed.
	Detail string `json:",omitempty"`
	// Share is the workflow id of its current or last share.
	Share    string `json:",omitempty"`
	Attempts int
	Ready    time.Time `json:",omitempty"` // when it became ready
}

// PlanStatus is a plan's progress ("progress" query), its result, and what it reports to
// central's service workflow.
type PlanStatus struct {
	Name    string
	Image   string
	Version string
	By      time.Time
	Window  string `json:",omitempty"`
	Rate    int64  `json:",omitempty"`
	Origin  string `json:",omitempty"`
	// Checked is when the readiness check ran (zero: not yet).
	Checked time.Time `json:",omitempty"`
	// Ended: the plan reached By (or was removed).
	Ended   bool
	Regions []PlanRegion
}

// NotReady lists the regions not ready (yet).
func (s PlanStatus) NotReady() []string {
	var out []string
	for _, r := range s.Regions {
		if r.State != PlanReady {
			out = append(out, r.Region)
		}
	}
	return out
}

// SignalPlan carries a plan's status to central's service workflow.
const SignalPlan = "plan"

// PlanImage runs a pre-distribution plan on central's queue (see the top of this file).
//
// Each region's loop runs in a child workflow of its own (PlanImageRegion, id plan/NAME/REGION),
// which signals its state to the plan; the plan keeps every region's state, answers the
// progress query, reports to central at most every planReportEvery, and continues as new
// when its history grows long. A plan of 1,000 regions thus keeps a few events per region in
// its own history and each region's retries in the region's. Before this version
// ("plan-region-workflows"), every region's loop ran in the plan's own history and each state
// change sent central the whole status: a plan of 1,000 regions passed Temporal's 50 MB
// history limit (docs/performance.md, "District scale").
func PlanImage(ctx workflow.Context, in PlanInput) (PlanStatus, error) {
	if in.Carry != nil || workflow.GetVersion(ctx, "plan-region-workflows", workflow.DefaultVersion, 1) == 1 {
		return planByRegion(ctx, in)
	}
	st := PlanStatus{Name: in.Name, Image: in.Image, By: in.By, Window: in.Window, Rate: in.Rate, Origin: in.Origin}
	for _, r := range in.Regions {
		st.Regions = append(st.Regions, PlanRegion{Region: r, State: PlanWaiting})
	}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (PlanStatus, error) { return st, nil }); err != nil {
		return st, err
	}
	if err := CheckPlan(in, workflow.Now(ctx)); err != nil {
		return st, activities.ErrBadInput.New(err.Error(), nil)
	}
	if err := tagTask(ctx, TaskTags{Kind: TaskPlan, Image: in.Image}); err != nil {
		return st, err
	}
	window, _ := settings.ParseWindow(in.Window) // checked above
	margin := planMargin(ctx, in)
	res, err := resolvePlan(ctx, in)
	if err != nil {
		return st, err
	}
	st.Version = res.Version
	ref := manifest.Ref{Name: res.Name, Version: res.Version}.String() // what a tag moved later does not change

	// Each report to central is its own signal (central keeps the last); sent from a
	// coroutine of its own, so that a region's loop never waits for central. The plan ends
	// only once its reports are sent (sent waits for them).
	report, sent := planReporter(ctx, func() PlanStatus { return st })
	report()

	done := 0
	for i := range in.Regions {
		workflow.Go(ctx, func(ctx workflow.Context) {
			defer func() { done++ }()
			planRegion(ctx, in, window, res.Zones[i], ref, res.Version, res.StoredBytes, &st.Regions[i], report)
		})
	}
	// The readiness check, at By minus the margin (at once when every region is ready).
	if err := sleepUntil(ctx, in.By.Add(-margin), func() bool { return allReady(st) }); err != nil {
		return ended(ctx, &st, in, report, sent, err)
	}
	st.Checked = workflow.Now(ctx)
	if late := st.NotReady(); len(late) > 0 {
		workflow.GetLogger(ctx).Warn("plan: regions not ready", "plan", in.Name, "regions", late, "by", in.By)
	}
	report()
	// The regions not ready go on trying until By; the plan stays until By, so what it
	// brought stays held for it.
	err = nil
	if left := in.By.Sub(workflow.Now(ctx)); left > 0 {
		err = workflow.Sleep(ctx, left)
	}
	if err == nil {
		err = workflow.Await(ctx, func() bool { return done == len(in.Regions) })
	}
	return ended(ctx, &st, in, report, sent, err)
}

// Late tells whether the readiness check found a region not ready.
func (s PlanStatus) Late(r PlanRegion) bool { return !s.Checked.IsZero() && r.State != PlanReady }

// ended closes a plan: its regions' status stays as it was, and central is told.
func ended(ctx workflow.Context, st *PlanStatus, in PlanInput, report, sent func(), err error) (PlanStatus, error) {
	st.Ended = true
	report()
	sent()
	if err != nil {
		if temporal.IsCanceledError(err) {
			releasePlan(ctx, in)
		}
		return *st, err
	}
	if late := st.NotReady(); len(late) > 0 {
		return *st, activities.ErrNotReady.New(fmt.Sprintf("plan %s: %s not ready by %s: %s", st.Name, st.Image,
			st.By.UTC().Format(time.RFC3339), strings.Join(planDetails(*st), "; ")), nil, *st)
	}
	return *st, nil
}

// releasePlan drops the plan's holds in its regions (a plan removed before By); a region
// that does not answer within a minute lets its hold lapse by itself.
func releasePlan(ctx workflow.Context, in PlanInput) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var r *activities.Region
	var fs []workflow.Future
	for _, region := range in.Regions {
		actx := workflow.WithActivityOptions(dctx, workflow.ActivityOptions{
			TaskQueue: activities.RegionQueue(region), ScheduleToCloseTimeout: time.Minute,
			RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 3},
		})
		fs = append(fs, workflow.ExecuteActivity(actx, r.ReleaseHolds, activities.ReleaseInput{Holder: PlanWorkflowID(in.Name)}))
	}
	for i, f := range fs {
		if err := f.Get(dctx, nil); err != nil {
			workflow.GetLogger(ctx).Warn("plan: its hold stays until it lapses", "plan", in.Name, "region", in.Regions[i], "err", err)
		}
	}
}

func allReady(st PlanStatus) bool { return len(st.NotReady()) == 0 }

// planDetails says, for people, where each region not ready stands.
func planDetails(st PlanStatus) []string {
	var out []string
	for _, r := range st.Regions {
		if r.State != PlanReady {
			s := r.Region + " " + string(r.State)
			if r.Detail != "" {
				s += " (" + r.Detail + ")"
			}
			out = append(out, s)
		}
	}
	return out
}

// sleepUntil waits until t or until stop tells it to stop, whichever is first.
func sleepUntil(ctx workflow.Context, t time.Time, stop func() bool) error {
	d := t.Sub(workflow.Now(ctx))
	if d <= 0 {
		return nil
	}
	_, err := workflow.AwaitWithTimeout(ctx, d, stop)
	return err
}

// planRegion brings ref to one region of a plan: inside the window, retrying after failures
// and in the next window after the window closed, until it is ready or By passes.
func planRegion(ctx workflow.Context, in PlanInput, window settings.Window, zone, ref, version string, bytes int64, pr *PlanRegion, report func()) {
	log := workflow.GetLogger(ctx)
	set := func(s PlanState, detail string) {
		if pr.State != s || pr.Detail != detail {
			pr.State, pr.Detail = s, detail
			report()
		}
	}
	failures := 0 // failed shares in a row
	for ctx.Err() == nil {
		now := workflow.Now(ctx)
		if !now.Before(in.By) {
			return
		}
		// Where the window lies is the zone database's answer: recorded once per attempt, so a
		// replay with another database takes the same path.
		var span [2]time.Time
		if err := workflow.SideEffect(ctx, func(workflow.Context) any {
			loc, err := time.LoadLocation(zone)
			if err != nil || zone == "" {
				loc = time.UTC
			}
			open, closes := window.Next(now, loc)
			return [2]time.Time{open, closes}
		}).Get(&span); err != nil {
			set(PlanRetrying, err.Error())
			return
		}
		open, closes := span[0], span[1]
		if closes.IsZero() || closes.After(in.By) {
			closes = in.By
		}
		if open.After(now) {
			set(PlanWaiting, "window opens "+open.Format(time.RFC3339))
			if err := workflow.Sleep(ctx, open.Sub(now)); err != nil {
				return
			}
			continue
		}
		pr.Attempts++
		pr.Share = fmt.Sprintf("%s/%s/%d", PlanWorkflowID(in.Name), pr.Region, pr.Attempts)
		set(PlanSharing, "")
		outcome := ""
		err := makeRoom(ctx, in, pr.Region, version, bytes)
		if err == nil {
			outcome, err = planShare(ctx, in, ref, pr, closes)
		}
		switch {
		case err == nil && outcome == "":
			pr.Ready = workflow.Now(ctx)
			set(PlanReady, "")
			keepHeld(ctx, in, pr.Region, version)
			return
		case ctx.Err() != nil:
			return
		case err == nil: // the window closed first
			failures = 0
			set(PlanWaiting, outcome)
			continue
		}
		failures++
		log.Warn("plan: a share failed", "plan", in.Name, "region", pr.Region, "err", err)
		set(PlanRetrying, rootCause(err))
		if nonRetryablePlan(err) {
			// Nothing a retry mends (the image left the catalog): the region waits for By.
			_ = workflow.Sleep(ctx, in.By.Sub(workflow.Now(ctx)))
			return
		}
		if err := workflow.Sleep(ctx, min(retryAfter(failures), in.By.Sub(workflow.Now(ctx)))); err != nil {
			return
		}
	}
}

// retryAfter is the wait after the n-th failed share in a row.
func retryAfter(n int) time.Duration {
	d := planRetry
	for i := 1; i < n && d < planRetryMax; i++ {
		d *= 2
	}
	return min(d, planRetryMax)
}

// planHoldGrace is how long past By a plan's hold lasts: the deploy a plan prepares for takes
// its own hold when it starts, a little after By.
const planHoldGrace = time.Hour

// makeRoom has the region hold the version for the plan until By (a hold taken before the
// version arrives, so eviction never takes it) and make room for its stored bytes, evicting
// the oldest images nothing needs; a region that cannot make room fails with NoRoom, naming
// what holds the space, before a byte moves.
func makeRoom(ctx workflow.Context, in PlanInput, region, version string, bytes int64) error {
	var r *activities.Region
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              activities.RegionQueue(region),
		ScheduleToStartTimeout: 10 * time.Minute, // the region is offline: try again later
		StartToCloseTimeout:    10 * time.Minute, // eviction removes and collects
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 3, NonRetryableErrorTypes: activities.NonRetryable(
			activities.ErrNoRoom, activities.ErrBadInput, activities.ErrBadVersion)},
	})
	var res activities.MakeRoomResult
	err := workflow.ExecuteActivity(actx, r.MakeRoom, activities.MakeRoomInput{Version: version, Bytes: bytes,
		Holder: PlanWorkflowID(in.Name), Until: in.By.Add(planHoldGrace)}).Get(ctx, &res)
	var gone []string
	for _, e := range res.Evicted {
		workflow.GetLogger(ctx).Info("plan: the region evicted an image to make room", "plan", in.Name, "region", region, "image", e.Name, "version", e.Version, "bytes", e.Bytes)
		gone = append(gone, e.Version)
	}
	if len(gone) > 0 {
		// Central forgets the evicted copies now, not at the region's next full report, so
		// no share counts on them meanwhile.
		var c *activities.Central
		cctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{TaskQueue: activities.CentralQueue, StartToCloseTimeout: time.Minute,
			RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 5, NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput, activities.ErrBadVersion)}})
		if ferr := workflow.ExecuteActivity(cctx, c.ForgetLocation, activities.ForgetInput{Region: region, Versions: gone}).Get(ctx, nil); ferr != nil {
			workflow.GetLogger(ctx).Warn("plan: central could not forget the evicted copies; the region's reports will", "region", region, "err", ferr)
		}
	}
	return err
}

// keepHeld renews a ready region's hold for the plan until By: a hold lasts at most
// store.MaxHoldDuration, and a plan may be longer.
func keepHeld(ctx workflow.Context, in PlanInput, region, version string) {
	for {
		left := in.By.Sub(workflow.Now(ctx))
		if left <= 0 {
			return
		}
		if err := workflow.Sleep(ctx, min(left, 24*time.Hour)); err != nil {
			return
		}
		if workflow.Now(ctx).Before(in.By) {
			if err := makeRoom(ctx, in, region, version, 0); err != nil {
				workflow.GetLogger(ctx).Warn("plan: the hold was not renewed", "plan", in.Name, "region", region, "err", err)
			}
		}
	}
}

// planShare runs one share of a plan's region until it ends or the window closes (at closes):
// "" and nil when it is ready, a reason and nil when the window closed first (the share is
// canceled; what it moved stays and the next window's share moves only the rest).
func planShare(ctx workflow.Context, in PlanInput, ref string, pr *PlanRegion, closes time.Time) (string, error) {
	sctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	child := workflow.WithChildOptions(sctx, workflow.ChildWorkflowOptions{
		WorkflowID:          pr.Share,
		TaskQueue:           activities.CentralQueue,
		WaitForCancellation: true,
	})
	f := workflow.ExecuteChildWorkflow(child, ShareImage, ShareImageInput{Image: ref, Target: pr.Region, Rate: in.Rate})
	var shareErr error
	finished := false
	timer := workflow.NewTimer(sctx, closes.Sub(workflow.Now(ctx)))
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(f, func(f workflow.Future) { finished, shareErr = true, f.Get(ctx, nil) })
	sel.AddFuture(timer, func(workflow.Future) {})
	sel.Select(ctx)
	if finished {
		return "", shareErr
	}
	cancel()
	_ = f.Get(ctx, nil) // the share ends its transfers before the next try
	if !closes.Before(in.By) {
		return "", activities.ErrNotReady.New("the share did not end by "+in.By.UTC().Format(time.RFC3339), nil)
	}
	return "window closed " + closes.Format(time.RFC3339) + " before the share ended; it goes on in the next window", nil
}

// nonRetryablePlan tells whether a share's failure is one no later attempt mends.
func nonRetryablePlan(err error) bool {
	return slices.ContainsFunc([]activities.ErrorType{activities.ErrUnknownImage, activities.ErrUnknownRegion, activities.ErrBadImage}, func(t activities.ErrorType) bool {
		return t.Matches(err)
	})
}

// planReporter returns report, which sends central a copy of the plan's status (status()) as a
// signal of its own from a coroutine, so that the plan never waits for central, and sent, which
// waits until every report is sent (a plan ends or continues only then).
func planReporter(ctx workflow.Context, status func() PlanStatus) (report, sent func()) {
	sending := 0
	report = func() {
		snap := status()
		snap.Regions = slices.Clone(snap.Regions)
		sending++
		workflow.Go(ctx, func(gctx workflow.Context) {
			defer func() { sending-- }()
			gctx, _ = workflow.NewDisconnectedContext(gctx)
			if err := workflow.SignalExternalWorkflow(gctx, CentralServiceID, "", SignalPlan, snap).Get(gctx, nil); err != nil {
				workflow.GetLogger(gctx).Warn("central's service workflow did not take the plan's report", "err", err)
			}
		})
	}
	sent = func() {
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		_ = workflow.Await(dctx, func() bool { return sending == 0 })
	}
	return report, sent
}

// planMargin is how long before By the plan checks its regions: in.Margin (default
// DefaultPlanMargin), at most half the time left.
func planMargin(ctx workflow.Context, in PlanInput) time.Duration {
	margin := in.Margin
	if margin <= 0 {
		margin = DefaultPlanMargin
	}
	return min(margin, in.By.Sub(workflow.Now(ctx))/2)
}

// resolvePlan has central resolve the plan's image to the version every region gets, and
// check its regions.
func resolvePlan(ctx workflow.Context, in PlanInput) (activities.ResolvePlanResult, error) {
	var c *activities.Central
	central := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           activities.CentralQueue,
		StartToCloseTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 10, NonRetryableErrorTypes: activities.NonRetryable(
			activities.ErrBadImage, activities.ErrUnknownImage, activities.ErrUnknownRegion)},
	})
	var res activities.ResolvePlanResult
	err := workflow.ExecuteActivity(central, c.ResolvePlan, activities.ResolvePlanInput{Image: in.Image, Regions: in.Regions}).Get(ctx, &res)
	return res, err
}
