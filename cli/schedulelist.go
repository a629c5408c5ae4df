package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	commonpb "go.temporal.io/api/common/v1"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
)

// `tms schedule ls` and `show`: what Temporal knows of schedules, and what became of the tasks
// they started.

// describeSchedule gathers what Temporal knows of a schedule; with firings, also the outcome
// of each recent firing (else only of the last).
func (c *tclient) describeSchedule(ctx context.Context, name string, firings bool) (*scheduleDetail, error) {
	desc, err := c.ScheduleClient().GetHandle(ctx, name).Describe(ctx)
	if err != nil {
		return nil, noSchedule(err, name)
	}
	d := &scheduleDetail{scheduleRow: scheduleRow{Name: name}, Firings: []firing{}, Running: []string{}, NextFirings: []time.Time{}}
	d.scheduleMemo = decodeMemo(desc.Memo)
	if st := desc.Schedule.State; st != nil {
		d.Paused, d.Note = st.Paused, st.Note
		if st.LimitedActions {
			n := st.RemainingActions
			d.Remaining, d.Done = &n, n == 0
		}
	}
	if p := desc.Schedule.Policy; p != nil {
		d.CatchupWindow = roundDuration(p.CatchupWindow)
	}
	info := desc.Info
	d.Fired, d.Skipped, d.Missed, d.Created = info.NumActions, info.NumActionsSkippedOverlap, info.NumActionsMissedCatchupWindow, info.CreatedAt
	for _, r := range info.RunningWorkflows {
		d.Running = append(d.Running, r.WorkflowID)
	}
	d.NextFirings = append(d.NextFirings, info.NextActionTimes...)
	if len(info.NextActionTimes) > 0 {
		d.Next = &info.NextActionTimes[0]
	}
	for i, r := range info.RecentActions {
		if r.StartWorkflowResult == nil || (!firings && i != len(info.RecentActions)-1) {
			continue
		}
		f := c.firingOutcome(ctx, r)
		d.Firings = append(d.Firings, f)
	}
	if n := len(d.Firings); n > 0 {
		d.Last = &d.Firings[n-1]
	}
	return d, nil
}

// firingOutcome is what became of the task a firing started.
func (c *tclient) firingOutcome(ctx context.Context, r client.ScheduleActionResult) firing {
	w := r.StartWorkflowResult
	f := firing{Scheduled: r.ScheduleTime, Started: r.ActualTime, Task: w.WorkflowID}
	resp, err := c.DescribeWorkflowExecution(ctx, w.WorkflowID, w.FirstExecutionRunID)
	if err != nil {
		f.Status = "unknown (" + rootMessage(err) + ")"
		return f
	}
	st := resp.GetWorkflowExecutionInfo().GetStatus()
	f.Status = st.String()
	if st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING && st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		if err := c.GetWorkflow(ctx, w.WorkflowID, w.FirstExecutionRunID).Get(ctx, nil); err != nil {
			f.Failure = rootMessage(err)
		}
	}
	return f
}

func decodeMemo(m *commonpb.Memo) scheduleMemo {
	var sm scheduleMemo
	if p, ok := m.GetFields()[memoKey]; ok {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &sm) // a schedule tms did not create shows without it
	}
	return sm
}

func (a *App) scheduleLs() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List the schedules: task, when, next firing, paused or not, last firing and its outcome",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			tc, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			it, err := tc.ScheduleClient().List(ctx, client.ScheduleListOptions{})
			if err != nil {
				return fmt.Errorf("cannot list schedules: %w", err)
			}
			var names []string
			for it.HasNext() {
				e, err := it.Next()
				if err != nil {
					return fmt.Errorf("cannot list schedules: %w", err)
				}
				names = append(names, e.ID)
			}
			slices.Sort(names)
			rows := []scheduleRow{}
			for _, n := range names {
				d, err := tc.describeSchedule(ctx, n, false)
				var nf *serviceerror.NotFound
				if errors.As(err, &nf) {
					continue // removed since the listing
				}
				if err != nil {
					return fmt.Errorf("cannot describe schedule %s: %w", n, err)
				}
				rows = append(rows, d.scheduleRow)
			}
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SCHEDULE\tTASK\tREGION\tTARGET\tIMAGE\tWHEN\tNEXT\tSTATE\tLAST FIRING")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, dash(r.Kind), dash(r.Region), dash(r.Target), dash(r.Image),
					dash(r.Spec), r.nextText(), r.state(), r.lastText())
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (r scheduleRow) zone() *time.Location {
	if loc, err := loadZone(r.Timezone); err == nil {
		return loc
	}
	return time.UTC
}

func (r scheduleRow) nextText() string {
	if r.Next == nil {
		return "-"
	}
	loc := r.zone()
	return r.Next.In(loc).Format("2006-01-02 15:04") + " " + loc.String()
}

func (r scheduleRow) state() string {
	switch {
	case r.Paused:
		return "paused"
	case r.Done:
		return "done"
	}
	return "active"
}

func (r scheduleRow) lastText() string {
	if r.Last == nil {
		return "-"
	}
	s := r.Last.Started.In(r.zone()).Format("2006-01-02 15:04") + " " + r.Last.Status
	if r.Last.Failure != "" {
		s += ": " + r.Last.Failure
	}
	return s
}

func (a *App) scheduleShow() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show NAME [--json]",
		Short: "Show a schedule: its task, when it fires, skipped and missed firings, recent firings and their outcomes",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tc, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			d, err := tc.describeSchedule(ctx, args[0], true)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(d)
			}
			loc := d.zone()
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			p := func(k, f string, args ...any) { fmt.Fprintf(tw, k+":\t"+f+"\n", args...) }
			p("Schedule", "%s", d.Name)
			p("Task", "%s", dash(d.What))
			p("Command", "tms %s", strings.Join(d.Command, " "))
			p("When", "%s %s", dash(d.Spec), d.Timezone)
			p("Next", "%s", d.nextText())
			state := d.state()
			if d.Note != "" {
				state += " (" + d.Note + ")"
			}
			p("State", "%s", state)
			if d.Remaining != nil {
				p("Remaining", "%d firing(s)", *d.Remaining)
			}
			p("Fired", "%d task(s)", d.Fired)
			p("Skipped", "%d firing(s): the previous task was still running", d.Skipped)
			p("Missed", "%d firing(s): Temporal was down longer than the catch-up window (%s)", d.Missed, d.CatchupWindow)
			if len(d.Running) > 0 {
				p("Running", "%s", strings.Join(d.Running, ", "))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(d.Firings) == 0 {
				fmt.Fprintln(a.Stdout, "\nNo firings yet.")
				return nil
			}
			fmt.Fprintln(a.Stdout, "\nRecent firings:")
			tw = tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  STARTED\tTASK\tOUTCOME")
			for _, f := range d.Firings {
				outcome := f.Status
				if f.Failure != "" {
					outcome += ": " + f.Failure
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Started.In(loc).Format("2006-01-02 15:04:05"), f.Task, outcome)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
