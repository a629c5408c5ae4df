package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/workflows"
)

// schedulePlans is central's activities.SchedulePlans: it reads the schedules from Temporal and
// starts a plan for each upcoming firing of a deploy or update that has none.
type schedulePlans struct {
	c   client.Client
	log *slog.Logger
	now func() time.Time
}

var _ activities.SchedulePlans = schedulePlans{}

// maxSchedulesPlanned bounds the schedules one round reads.
const maxSchedulesPlanned = 10000

func (p schedulePlans) PlanSchedules(ctx context.Context, horizon time.Duration) ([]string, error) {
	it, err := p.c.ScheduleClient().List(ctx, client.ScheduleListOptions{PageSize: 200})
	if err != nil {
		return nil, fmt.Errorf("listing the schedules: %w", err)
	}
	now := p.now()
	var started []string
	for n := 0; it.HasNext() && n < maxSchedulesPlanned; n++ {
		e, err := it.Next()
		if err != nil {
			return started, fmt.Errorf("listing the schedules: %w", err)
		}
		if e.Paused {
			continue
		}
		memo, next := p.read(ctx, e)
		if memo.Image == "" || memo.Region == "" || !slices.Contains([]string{workflows.TaskDeploy, workflows.TaskUpdate}, memo.Kind) {
			continue
		}
		for _, t := range next {
			if !t.After(now) || t.Sub(now) > horizon {
				continue
			}
			in := workflows.PlanInput{Name: workflows.ScheduleFiringPlan(e.ID, t), Image: memo.Image, Regions: []string{memo.Region},
				By: t, Origin: "schedule:" + e.ID}
			if err := workflows.CheckPlan(in, now); err != nil {
				p.log.Warn("no plan for a scheduled firing", "schedule", e.ID, "firing", t, "err", err)
				continue
			}
			tags := workflows.TaskTags{Kind: workflows.TaskPlan, Image: memo.Image, StartedBy: "schedule:" + e.ID}
			_, err := p.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: workflows.PlanWorkflowID(in.Name), TaskQueue: activities.CentralQueue, TypedSearchAttributes: tags.StartAttributes(),
				WorkflowExecutionErrorWhenAlreadyStarted: true,
				// A plan removed or ended is not made again for the same firing.
				WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			}, workflows.PlanImage, in)
			if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				continue
			}
			if err != nil {
				return started, fmt.Errorf("starting plan %s for schedule %s: %w", in.Name, e.ID, err)
			}
			started = append(started, in.Name)
		}
	}
	return started, nil
}

// read returns a schedule's tms memo and its next firings: from the listing when it carries
// them, else from the schedule's description.
func (p schedulePlans) read(ctx context.Context, e *client.ScheduleListEntry) (workflows.ScheduleMemo, []time.Time) {
	var memo workflows.ScheduleMemo
	pl, ok := e.Memo.GetFields()[workflows.ScheduleMemoKey]
	next := e.NextActionTimes
	if !ok || len(next) == 0 {
		d, err := p.c.ScheduleClient().GetHandle(ctx, e.ID).Describe(ctx)
		if err != nil {
			p.log.Warn("cannot read a schedule", "schedule", e.ID, "err", err)
			return memo, nil
		}
		pl, ok = d.Memo.GetFields()[workflows.ScheduleMemoKey]
		next = d.Info.NextActionTimes
	}
	if ok {
		_ = converter.GetDefaultDataConverter().FromPayload(pl, &memo) // a schedule tms did not make has none
	}
	return memo, next
}
