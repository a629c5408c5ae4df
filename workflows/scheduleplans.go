package workflows

import (
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
)

// ScheduleMemoKey is the memo key under which `tms schedule create` records a ScheduleMemo with
// each schedule it makes.
const ScheduleMemoKey = "tms"

// ScheduleMemo is what tms records with a schedule: `tms schedule ls` shows it, and central's
// schedule planner reads which image a schedule deploys in which region.
type ScheduleMemo struct {
	Kind     string   `json:"kind"`
	Region   string   `json:"region"`
	Target   string   `json:"target,omitempty"` // group or terminals
	Image    string   `json:"image,omitempty"`
	What     string   `json:"what"`
	Command  []string `json:"command"` // TASK..., as given
	Spec     string   `json:"spec"`    // "at 2026-12-03 07:00:00" or "cron 0 7 * * mon-fri"
	Timezone string   `json:"timezone"`
}

// Plans for schedules: a schedule that deploys or updates an image in a region gets, ahead of
// each firing, a plan that brings the image to the region by the firing, so a scheduled restore
// never waits for the WAN. Central's SchedulePlanner workflow (id service/planner) asks the
// central activity PlanSchedules every PlannerInterval to start the plans of the firings within
// PlannerHorizon that have none; the plans are ordinary plans (tms plan ls), named
// ScheduleFiringPlan(schedule, firing), with Origin "schedule:NAME".

// SchedulePlannerID is the id of central's schedule planner.
const SchedulePlannerID = "service/planner"

// Defaults of the schedule planner.
const (
	// PlannerInterval is how often the planner looks at the schedules.
	PlannerInterval = 5 * time.Minute
	// PlannerHorizon is how far ahead a firing gets its plan: a week covers a weekly restore
	// and a holiday's first day.
	PlannerHorizon = 7 * 24 * time.Hour
	// plannerRounds is how many rounds a planner runs before it continues as new.
	plannerRounds = 200
)

// ScheduleFiringPlan is the name of the plan for a schedule's firing at t: "sched.NAME.STAMP",
// the name shortened to fit a plan's name.
func ScheduleFiringPlan(schedule string, t time.Time) string {
	const stamp = "20060102t1504"
	if len(schedule) > 63-len("sched..")-len(stamp) {
		schedule = schedule[:63-len("sched..")-len(stamp)]
	}
	return "sched." + strings.TrimRight(schedule, ".-_") + "." + t.UTC().Format(stamp)
}

// SchedulePlannerInput configures the planner.
type SchedulePlannerInput struct {
	Interval time.Duration // default PlannerInterval
	Horizon  time.Duration // default PlannerHorizon
}

// SchedulePlanner runs on central's queue for as long as central runs (its worker starts it):
// every Interval, PlanSchedules starts the plans of firings within Horizon that have none.
func SchedulePlanner(ctx workflow.Context, in SchedulePlannerInput) error {
	if in.Interval <= 0 {
		in.Interval = PlannerInterval
	}
	if in.Horizon <= 0 {
		in.Horizon = PlannerHorizon
	}
	var c *activities.Central
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           activities.CentralQueue,
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3},
	})
	for range plannerRounds {
		var res activities.PlanSchedulesResult
		if err := workflow.ExecuteActivity(actx, c.PlanSchedules, activities.PlanSchedulesInput{Horizon: in.Horizon}).Get(ctx, &res); err != nil {
			workflow.GetLogger(ctx).Warn("the schedule planner could not plan; it tries again", "err", err)
		}
		if err := workflow.Sleep(ctx, in.Interval); err != nil {
			return err
		}
	}
	return workflow.NewContinueAsNewError(ctx, SchedulePlanner, in)
}
