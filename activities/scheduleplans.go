package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
)

// SchedulePlans starts the plans that bring a schedule's image to its region before the
// schedule's firings (see workflows.SchedulePlanner). Central's server implements it with its
// Temporal client: it lists the schedules and starts plan workflows.
type SchedulePlans interface {
	// PlanSchedules starts a plan for each firing within horizon of a deploy or update
	// schedule that has none, and returns the names of the plans it started.
	PlanSchedules(ctx context.Context, horizon time.Duration) ([]string, error)
}

// PlanSchedulesInput bounds how far ahead firings get plans.
type PlanSchedulesInput struct{ Horizon time.Duration }

// PlanSchedulesResult names the plans started.
type PlanSchedulesResult struct{ Started []string }

// PlanSchedules starts the plans of upcoming scheduled deploys and updates; without a planner
// (a central built without a Temporal client) it does nothing.
func (c *Central) PlanSchedules(ctx context.Context, in PlanSchedulesInput) (PlanSchedulesResult, error) {
	if c.Planner == nil {
		return PlanSchedulesResult{}, nil
	}
	started, err := c.Planner.PlanSchedules(ctx, in.Horizon)
	if len(started) > 0 && activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Info("plans started for scheduled firings", "plans", started)
	}
	return PlanSchedulesResult{Started: started}, err
}
