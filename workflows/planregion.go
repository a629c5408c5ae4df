package workflows

import (
	"fmt"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/manifest"
	"tms/settings"
)

// A plan at district scale: PlanImage starts one PlanImageRegion child per region and keeps only
// their states; see PlanImage.

// SignalPlanRegion carries a region's state from its PlanImageRegion workflow to its plan.
const SignalPlanRegion = "plan-region"

const (
	// planReportEvery is the least time between two of a plan's reports to central while its
	// regions change (the readiness check and the plan's end report at once): a plan of 1,000
	// regions sends central a few dozen reports, not two per region.
	planReportEvery = 30 * time.Second
	// planHistoryLimit is the history length past which a plan continues as new.
	planHistoryLimit = 10000
)

// planTooLong tells whether a plan's history is long enough to continue as new (a variable for
// the tests, which have no history length to pass).
var planTooLong = func(ctx workflow.Context) bool {
	return workflow.GetInfo(ctx).GetCurrentHistoryLength() > planHistoryLimit
}

// PlanRegionWorkflowID is the id of the workflow that runs region's part of plan name.
func PlanRegionWorkflowID(name, region string) string { return PlanWorkflowID(name) + "/" + region }

// PlanRegionInput is one region of a plan.
type PlanRegionInput struct {
	// Plan is the plan, without its regions.
	Plan    PlanInput
	Region  string
	Zone    string // the region's IANA zone, where the window lies
	Ref     string // NAME@VERSION
	Version string
	// Bytes is the version's stored bytes, for which the region makes room.
	Bytes int64
}

// PlanRegionReport is a region's state as its PlanImageRegion workflow signals it to the plan.
type PlanRegionReport struct {
	PlanRegion
	// Seq orders one region's reports (signals sent from different coroutines may overtake
	// each other); Ended: the region's workflow ended, this is its last report.
	Seq   int
	Ended bool `json:",omitempty"`
}

// PlanCarry is a plan's state carried across continue-as-new.
type PlanCarry struct {
	Status PlanStatus
	// Seq is the last report taken from each region (by index); Done tells which regions'
	// workflows ended.
	Seq  []int
	Done []bool
	// Margin is the readiness check's margin, fixed when the plan started.
	Margin time.Duration
}

// PlanImageRegion runs one region of a plan (PlanImage starts it): inside the window, retrying after
// failures and in the next window after the window closed, until the region is ready, then it
// renews the region's hold until By. It signals every change of the region's state to the plan.
func PlanImageRegion(ctx workflow.Context, in PlanRegionInput) (PlanRegion, error) {
	pr := PlanRegion{Region: in.Region, State: PlanWaiting}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (PlanRegion, error) { return pr, nil }); err != nil {
		return pr, err
	}
	var window settings.Window
	if in.Plan.Window != "" {
		w, err := settings.ParseWindow(in.Plan.Window)
		if err != nil {
			return pr, activities.ErrBadInput.New(fmt.Sprintf("plan %s: %v", in.Plan.Name, err), nil)
		}
		window = w
	}
	var parent string
	if p := workflow.GetInfo(ctx).ParentWorkflowExecution; p != nil {
		parent = p.ID
	}
	seq, sending := 0, 0
	send := func(ended bool) {
		if parent == "" {
			return
		}
		seq++
		rep := PlanRegionReport{PlanRegion: pr, Seq: seq, Ended: ended}
		sending++
		workflow.Go(ctx, func(gctx workflow.Context) {
			defer func() { sending-- }()
			gctx, _ = workflow.NewDisconnectedContext(gctx)
			if err := workflow.SignalExternalWorkflow(gctx, parent, "", SignalPlanRegion, rep).Get(gctx, nil); err != nil {
				workflow.GetLogger(gctx).Warn("the plan did not take the region's report", "plan", in.Plan.Name, "region", in.Region, "err", err)
			}
		})
	}
	planRegion(ctx, in.Plan, window, in.Zone, in.Ref, in.Version, in.Bytes, &pr, func() { send(false) })
	send(true)
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	_ = workflow.Await(dctx, func() bool { return sending == 0 })
	return pr, ctx.Err()
}

// planByRegion is PlanImage with a PlanRegion workflow per region.
func planByRegion(ctx workflow.Context, in PlanInput) (PlanStatus, error) {
	var cy PlanCarry
	first := in.Carry == nil
	if !first {
		cy = *in.Carry
		in.Carry = nil
	} else {
		cy.Status = PlanStatus{Name: in.Name, Image: in.Image, By: in.By, Window: in.Window, Rate: in.Rate, Origin: in.Origin}
		for _, r := range in.Regions {
			cy.Status.Regions = append(cy.Status.Regions, PlanRegion{Region: r, State: PlanWaiting})
		}
		cy.Seq, cy.Done = make([]int, len(in.Regions)), make([]bool, len(in.Regions))
	}
	st := &cy.Status
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (PlanStatus, error) { return *st, nil }); err != nil {
		return *st, err
	}
	// Reports to central, each a signal of its own sent from a coroutine, so that the plan
	// never waits for central; the plan ends or continues only once they are sent.
	report, sent := planReporter(ctx, func() PlanStatus { return *st })
	index := make(map[string]int, len(st.Regions)) // looked up, never ranged over
	for i, r := range st.Regions {
		index[r.Region] = i
	}

	var ends workflow.Channel
	if first { // the plan's first run: check, resolve and start the regions
		if err := CheckPlan(in, workflow.Now(ctx)); err != nil {
			return *st, activities.ErrBadInput.New(err.Error(), nil)
		}
		if err := tagTask(ctx, TaskTags{Kind: TaskPlan, Image: in.Image}); err != nil {
			return *st, err
		}
		cy.Margin = planMargin(ctx, in)
		res, err := resolvePlan(ctx, in)
		if err != nil {
			return *st, err
		}
		st.Version = res.Version
		report()
		ref := manifest.Ref{Name: res.Name, Version: res.Version}.String() // what a tag moved later does not change
		plan := in
		plan.Regions = nil
		var starts []workflow.Future
		// A region's workflow that ends without its last report (it failed) ends its region
		// too; a plan's first run hears of it here, a continued one by its last report only.
		ends = workflow.NewChannel(ctx)
		for i, r := range in.Regions {
			// The regions' workflows outlive a continue-as-new of the plan (abandoned, not
			// terminated); a removed plan cancels them itself (cancelRegions).
			cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
				WorkflowID:        PlanRegionWorkflowID(in.Name, r),
				TaskQueue:         activities.CentralQueue,
				ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
			})
			f := workflow.ExecuteChildWorkflow(cctx, PlanImageRegion, PlanRegionInput{Plan: plan, Region: r, Zone: res.Zones[i],
				Ref: ref, Version: res.Version, Bytes: res.StoredBytes})
			starts = append(starts, f.GetChildWorkflowExecution())
			workflow.Go(ctx, func(g workflow.Context) {
				if err := f.Get(g, nil); err != nil && g.Err() == nil {
					workflow.GetLogger(g).Warn("plan: a region's workflow failed", "plan", in.Name, "region", r, "err", err)
				}
				ends.Send(g, i)
			})
		}
		for i, f := range starts {
			if err := f.Get(ctx, nil); err != nil {
				st.Regions[i].State, st.Regions[i].Detail = PlanRetrying, rootCause(err)
				cy.Done[i] = true
			}
		}
	}

	signals := workflow.GetSignalChannel(ctx, SignalPlanRegion)
	take := func(rep PlanRegionReport) bool {
		i, ok := index[rep.Region]
		if !ok {
			return false
		}
		if rep.Ended {
			cy.Done[i] = true
		}
		if rep.Seq <= cy.Seq[i] {
			return false
		}
		cy.Seq[i] = rep.Seq
		st.Regions[i] = rep.PlanRegion
		return true
	}
	allDone := func() bool { return !slices.Contains(cy.Done, false) }
	dirty, reportDue := false, false
	var reportTimer workflow.Future
	check := in.By.Add(-cy.Margin)
	for ctx.Err() == nil {
		now := workflow.Now(ctx)
		if st.Checked.IsZero() && (!now.Before(check) || allReady(*st)) {
			st.Checked = now
			if late := st.NotReady(); len(late) > 0 {
				workflow.GetLogger(ctx).Warn("plan: regions not ready", "plan", in.Name, "regions", late, "by", in.By)
			}
			report()
			dirty = false
		}
		// At By the regions' workflows end by themselves; one that does not say so (terminated
		// by an admin, say) is waited for no longer than planHoldGrace.
		if !now.Before(in.By) && (allDone() || !now.Before(in.By.Add(planHoldGrace))) {
			break
		}
		if dirty && reportDue {
			report()
			dirty, reportDue = false, false
		}
		if planTooLong(ctx) {
			// Continue as new with what the plan knows, once its reports are out and every
			// region's report it received is taken. Waiting for a report to go out lets more
			// regions' reports in, so the plan takes them and reports again until a wait brought
			// none: a region's report that came during the last wait and was left in the
			// channel would be gone with this run (found at 1,000 regions, where a region's
			// "ready" was lost so). A report that comes after the last look is held by the
			// server, which refuses the continue-as-new until the plan has read it.
			for {
				sent()
				for {
					var rep PlanRegionReport
					if !signals.ReceiveAsync(&rep) {
						break
					}
					dirty = take(rep) || dirty
				}
				if !dirty {
					break
				}
				report()
				dirty = false
			}
			in.Regions, in.Carry = nil, &cy
			return *st, workflow.NewContinueAsNewError(ctx, PlanImage, in)
		}
		wctx, cancelWait := workflow.WithCancel(ctx)
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(signals, func(c workflow.ReceiveChannel, _ bool) {
			var rep PlanRegionReport
			c.Receive(ctx, &rep)
			dirty = take(rep) || dirty
		})
		sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) {})
		if ends != nil {
			sel.AddReceive(ends, func(c workflow.ReceiveChannel, _ bool) {
				var i int
				c.Receive(ctx, &i)
				cy.Done[i] = true
			})
		}
		var next time.Time
		if st.Checked.IsZero() {
			next = check
		} else if now.Before(in.By) {
			next = in.By
		} else {
			next = in.By.Add(planHoldGrace)
		}
		if !next.IsZero() {
			sel.AddFuture(workflow.NewTimer(wctx, next.Sub(now)), func(workflow.Future) {})
		}
		if dirty && reportTimer == nil {
			reportTimer = workflow.NewTimer(ctx, planReportEvery)
		}
		if reportTimer != nil {
			sel.AddFuture(reportTimer, func(f workflow.Future) {
				reportTimer, reportDue = nil, f.Get(ctx, nil) == nil
			})
		}
		sel.Select(ctx)
		cancelWait()
	}
	err := ctx.Err()
	if err != nil {
		cancelRegions(ctx, in.Name, st, cy.Done)
	}
	in.Regions = regionNames(*st)
	return ended(ctx, st, in, report, sent, err)
}

// cancelRegions asks the regions' workflows of a removed plan to stop (they outlive the plan
// otherwise: its children are abandoned, so that they survive its continue-as-new).
func cancelRegions(ctx workflow.Context, name string, st *PlanStatus, done []bool) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var fs []workflow.Future
	for i, r := range st.Regions {
		if !done[i] {
			fs = append(fs, workflow.RequestCancelExternalWorkflow(dctx, PlanRegionWorkflowID(name, r.Region), ""))
		}
	}
	for _, f := range fs {
		if err := f.Get(dctx, nil); err != nil {
			workflow.GetLogger(ctx).Warn("plan: a region's workflow did not take the cancellation", "plan", name, "err", err)
		}
	}
}

// regionNames lists a plan's regions by name.
func regionNames(s PlanStatus) []string {
	out := make([]string, 0, len(s.Regions))
	for _, r := range s.Regions {
		out = append(out, r.Region)
	}
	return out
}
