package server

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/devtemporal"
	"tms/workflows"
)

// A deploy schedule's next firing within the horizon gets its plan, once; a paused schedule, a
// power schedule and a firing beyond the horizon get none.
func TestSchedulePlansStartOnePlanPerFiring(t *testing.T) {
	srv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c, err := client.Dial(client.Options{HostPort: srv.Address()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := context.Background()
	// Firings at the next full hour (within a day) and next year (beyond a week).
	now := time.Now().UTC()
	soon := now.Truncate(time.Hour).Add(time.Hour)
	schedule := func(id, kind string, at time.Time, paused bool) {
		t.Helper()
		memo := workflows.ScheduleMemo{Kind: kind, Region: "region-b", Image: "exam", Target: "lab"}
		_, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{ID: id, Paused: paused,
			Spec:   client.ScheduleSpec{Calendars: []client.ScheduleCalendarSpec{{Year: []client.ScheduleRange{{Start: at.Year()}}, Month: []client.ScheduleRange{{Start: int(at.Month())}}, DayOfMonth: []client.ScheduleRange{{Start: at.Day()}}, Hour: []client.ScheduleRange{{Start: at.Hour()}}, Minute: []client.ScheduleRange{{Start: 0}}}}},
			Action: &client.ScheduleWorkflowAction{ID: "deploy/" + id, Workflow: workflows.DeployImage, Args: []any{workflows.DeployImageInput{Region: "region-b", Group: "lab", Image: "exam"}}, TaskQueue: activities.RegionQueue("region-b")},
			Memo:   map[string]any{workflows.ScheduleMemoKey: memo},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.ScheduleClient().GetHandle(context.Background(), id).Delete(context.Background()) })
	}
	schedule("room3-restore", workflows.TaskDeploy, soon, false)
	schedule("room4-restore", workflows.TaskDeploy, soon, true)
	schedule("room3-off", workflows.TaskPowerOff, soon, false)
	schedule("next-year", workflows.TaskUpdate, soon.AddDate(1, 0, 0), false)

	p := schedulePlans{c: c, log: slog.New(slog.DiscardHandler), now: time.Now}
	want := workflows.ScheduleFiringPlan("room3-restore", soon)
	var started []string
	deadline := time.Now().Add(30 * time.Second)
	for len(started) == 0 && time.Now().Before(deadline) { // schedules reach the listing a little late
		if started, err = p.PlanSchedules(ctx, workflows.PlannerHorizon); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !slices.Equal(started, []string{want}) {
		t.Fatalf("started %v, want [%s]", started, want)
	}
	d, err := c.DescribeWorkflowExecution(ctx, workflows.PlanWorkflowID(want), "")
	if err != nil || d.GetWorkflowExecutionInfo().GetType().GetName() != workflows.NamePlanImage {
		t.Fatalf("the plan's workflow: %v, %v", d, err)
	}
	if again, err := p.PlanSchedules(ctx, workflows.PlannerHorizon); err != nil || len(again) != 0 {
		t.Fatalf("a second round started %v (%v), want nothing: the firing has its plan", again, err)
	}
	if n := len(want); n > 63 {
		t.Fatalf("plan name %q is %d long", want, n)
	}
	if err := workflows.CheckPlan(workflows.PlanInput{Name: workflows.ScheduleFiringPlan("a-very-long-schedule-name-that-goes-on-and-on-and-on-x", soon),
		Image: "exam", Regions: []string{"r"}, By: soon}, now); err != nil {
		t.Fatalf("a long schedule's plan name: %v", err)
	}
}
