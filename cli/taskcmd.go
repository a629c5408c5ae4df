package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/workflows"
)

// `tms task ls`, `show` and `cancel`: the long workflows admins start, as Temporal knows them.

// taskRow is one line of `tms task ls`.
type taskRow struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Region    string     `json:"region,omitempty"`
	Group     string     `json:"group,omitempty"`
	Terminals []string   `json:"terminals,omitempty"`
	Image     string     `json:"image,omitempty"`
	State     string     `json:"state"`  // waiting, running, completed, failed, canceled, terminated, timed-out
	Status    string     `json:"status"` // the execution status as Temporal names it: Running, Completed...
	Start     time.Time  `json:"start"`
	StartAt   *time.Time `json:"start_at,omitempty"` // a task asked for later: when it starts
	Close     *time.Time `json:"close,omitempty"`
	Schedule  string     `json:"schedule,omitempty"`   // the schedule that started it
	StartedBy string     `json:"started_by,omitempty"` // the user who started it, or schedule:NAME
	Type      string     `json:"type"`                 // the workflow type
	TaskQueue string     `json:"task_queue"`
}

// target is what the task works on, for the listing: its group, or its terminals.
func (r taskRow) target() string {
	if r.Group != "" {
		return "group " + r.Group
	}
	if len(r.Terminals) > 3 {
		return strings.Join(r.Terminals[:3], ",") + fmt.Sprintf(",+%d", len(r.Terminals)-3)
	}
	return strings.Join(r.Terminals, ",")
}

// started says when the task started, or, while it waits, when it will.
func (r taskRow) started() string {
	if r.State == "waiting" && r.StartAt != nil {
		return "at " + r.StartAt.Local().Format("2006-01-02 15:04")
	}
	return r.Start.Local().Format("2006-01-02 15:04")
}

func (a *App) taskCommand() *cobra.Command {
	c := &cobra.Command{Use: "task", Short: "List, show, change, cancel and remove tasks: captures, deploys, updates, power, shares"}
	c.AddCommand(a.taskLs(), a.taskShow(), a.taskModify(), a.taskCancel(), a.taskRm())
	return c
}

// maxListLimit bounds --limit.
const maxListLimit = 10000

func (a *App) taskLs() *cobra.Command {
	var f taskFilter
	var asJSON bool
	var limit int
	c := &cobra.Command{
		Use:   "ls [--region R] [--kind K] [--state S] [--group G] [--terminal T] [--all] [--limit N] [--json]",
		Short: "List tasks, newest first: unfinished ones, or with --all or --state finished ones too",
		Long: `ls lists the tasks admins and schedules started (a deploy's per-terminal tasks and its share
belong to it: 'tms task show' shows them). Without --state or --all only unfinished tasks are
listed: running ones, and waiting ones (asked for later with --at).

  --region R    tasks working in region R (shares: copying to R)
  --kind K      one of: ` + strings.Join(workflows.TaskKinds, ", ") + `
  --state S     one of: ` + stateWords() + ` ("running" includes waiting ones)
  --group G     tasks started for group G
  --terminal T  tasks working on terminal T, named or as a member of their group`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit <= 0 || limit > maxListLimit {
				return usageError{fmt.Errorf("%s: --limit must be 1 to %d", cmd.CommandPath(), maxListLimit)}
			}
			now := a.now()
			q, err := f.query(now)
			if err != nil {
				return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rows := []taskRow{}
			var token []byte
			for len(rows) < limit {
				resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
					Namespace: c.cfg.Namespace, Query: q, PageSize: int32(min(limit, 1000)), NextPageToken: token})
				if err != nil {
					return fmt.Errorf("cannot list tasks: %w", err)
				}
				for _, e := range resp.Executions {
					at := decodeTaskAttrs(e.GetSearchAttributes())
					r := taskRow{ID: e.GetExecution().GetWorkflowId(), Kind: at.Kind, Region: at.Region, Group: at.Group, Terminals: at.Terminals,
						Image: at.Image, StartAt: at.StartAt, Schedule: at.Schedule, StartedBy: at.StartedBy, Start: e.GetStartTime().AsTime(),
						State: stateWord(e.GetStatus(), at.StartAt, now), Status: e.GetStatus().String(), Type: e.GetType().GetName(), TaskQueue: e.GetTaskQueue()}
					if e.GetCloseTime() != nil {
						t := e.GetCloseTime().AsTime()
						r.Close = &t
					}
					rows = append(rows, r)
				}
				if token = resp.NextPageToken; len(token) == 0 {
					break
				}
			}
			slices.SortStableFunc(rows, func(x, y taskRow) int { return y.Start.Compare(x.Start) })
			if len(rows) > limit {
				rows = rows[:limit]
			}
			if asJSON {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TASK\tKIND\tREGION\tTARGET\tIMAGE\tSTATE\tSTARTED\tSTARTED BY\tSCHEDULE")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, dash(r.Kind), dash(r.Region), dash(r.target()), dash(r.Image),
					r.State, r.started(), dash(r.StartedBy), dash(r.Schedule))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&f.Region, "region", "", "only tasks of this region (shares: to this region)")
	c.Flags().StringVar(&f.Kind, "kind", "", "only tasks of this kind: "+strings.Join(workflows.TaskKinds, ", "))
	c.Flags().StringVar(&f.State, "state", "", "only tasks in this state: "+stateWords())
	c.Flags().StringVar(&f.Group, "group", "", "only tasks started for this group")
	c.Flags().StringVar(&f.Terminal, "terminal", "", "only tasks working on this terminal (alone or in its group)")
	c.Flags().StringVar(&f.By, "by", "", "only tasks started by this user, or by schedule:NAME")
	c.Flags().BoolVar(&f.All, "all", false, "include finished tasks")
	c.Flags().IntVar(&limit, "limit", 20, "list at most this many")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *App) taskShow() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show a task: status, times, its current step and progress, its failure or result",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			id := args[0]
			d, err := c.describe(ctx, id, true)
			if err != nil {
				return err
			}
			if d.Close != nil {
				var raw json.RawMessage
				err := c.GetWorkflow(ctx, id, d.RunID).Get(ctx, &raw)
				if err != nil {
					d.Failure = rootMessage(err)
					// A task that failed on every terminal says how each failed in its error.
					var ae *temporal.ApplicationError
					if errors.As(err, &ae) && ae.HasDetails() && ae.Details(&raw) == nil {
						d.Terminals = terminalLines(raw, false)
					}
				} else {
					d.Result, d.Summary = raw, resultSummary(d.Type, raw)
					d.Terminals = terminalLines(raw, false)
				}
			}
			if asJSON {
				return a.printJSON(d)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			p := func(k, f string, args ...any) { fmt.Fprintf(tw, k+":\t"+f+"\n", args...) }
			p("Task", "%s", d.ID)
			p("Kind", "%s (workflow %s)", dash(d.Kind), d.Type)
			if d.Region != "" {
				p("Region", "%s", d.Region)
			}
			if t := (taskRow{Group: d.Group, Terminals: d.Targets}).target(); t != "" {
				p("Target", "%s", t)
			}
			if d.Image != "" {
				p("Image", "%s", d.Image)
			}
			p("State", "%s", d.State)
			if d.Schedule != "" {
				p("Schedule", "%s", d.Schedule)
			}
			p("Started", "%s", d.Start.Local().Format(time.DateTime))
			if d.StartAt != nil {
				p("Start time", "%s (asked for later with --at)", d.StartAt.Local().Format(time.DateTime))
			}
			if d.Close != nil {
				p("Ended", "%s (after %s)", d.Close.Local().Format(time.DateTime), d.Close.Sub(d.Start).Round(time.Second))
			}
			p("Task queue", "%s", d.TaskQueue)
			if d.Close == nil {
				p("Progress", "%s", d.progressLine())
			}
			for _, pa := range d.Pending {
				s := pa.Type + " (" + pa.State
				if pa.Attempt > 1 {
					s += fmt.Sprintf(", attempt %d", pa.Attempt)
				}
				s += ")"
				if pa.LastHeartbeat != nil {
					s += ", last report " + pa.LastHeartbeat.Local().Format(time.DateTime)
				}
				if pa.progress != "" {
					s += ": " + pa.progress
				}
				if pa.LastFailure != "" {
					s += "; last failure: " + pa.LastFailure
				}
				p("Step", "%s", s)
			}
			for _, ch := range d.Children {
				p("Child task", "%s", ch)
			}
			if d.Failure != "" {
				p("Failure", "%s", d.Failure)
			}
			if d.Summary != "" {
				p("Result", "%s", d.Summary)
			}
			p("Temporal UI", "%s", d.URL)
			if len(d.Terminals) > 0 {
				fmt.Fprintln(tw, "\nTERMINAL\tSTATE\tDETAIL")
				for _, l := range d.Terminals {
					detail := l.detailText()
					if l.Error != "" {
						detail = l.Error
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Terminal, l.State, detail)
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *App) taskCancel() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a capture, deploy or share",
		Long: `Cancel asks the task to stop. A task waiting for its start time (--at) ends without having
touched anything. A capture or deploy stops waiting for its terminals and sets their next boot
back to their own disk (a deploy waits for each terminal's task to do so; a deploy interrupted
mid-write leaves that disk incomplete until it is deployed again); a share stops its transfer
and records nothing.`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			id := args[0]
			d, err := c.describe(ctx, id, false)
			if err != nil {
				return err
			}
			if d.Close != nil {
				return fmt.Errorf("task %s has already ended (%s)", id, strings.ToLower(d.Status))
			}
			if err := c.CancelWorkflow(ctx, id, d.RunID); err != nil {
				return notFound(err, id)
			}
			if d.State == "waiting" {
				fmt.Fprintf(a.Stdout, "cancel requested for task %s: it had not started, so it touched nothing\n", id)
				return nil
			}
			fmt.Fprintf(a.Stdout, "cancel requested for task %s: its terminals are set back to boot from their own disk; 'tms task show %s' says when it has stopped\n", id, id)
			return nil
		},
	}
}

func (a *App) taskModify() *cobra.Command {
	var at, group, image string
	var terminals []string
	c := &cobra.Command{
		Use:   "modify ID [--at TIME] [--group G | --terminal T...] [--image IMAGE]",
		Short: "Change a task that has not started yet: its start time, its targets, its image",
		Long: `modify changes a task asked for later (--at) while it waits: when it starts, the group or
terminals a deploy works on, the image it deploys, captures into or shares. The task keeps its
id; its listing follows the change. A task that has started cannot be changed: cancel it and
start another. A capture's terminal and a share's region cannot be changed.`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if group != "" && len(terminals) > 0 {
				return usageError{fmt.Errorf("%s: give --group or --terminal, not both", cmd.CommandPath())}
			}
			m := workflows.ModifyInput{Group: group, Terminals: terminals, Image: image}
			if at == "" && group == "" && len(terminals) == 0 && image == "" {
				return usageError{fmt.Errorf("%s: nothing to change: give --at, --group, --terminal or --image", cmd.CommandPath())}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			d, err := c.describe(ctx, id, false)
			if err != nil {
				return err
			}
			if at != "" {
				// The new time is in the zone of the task's region, as when it was asked for.
				if m.StartAt, err = a.startAt(cmd, d.Region, at); err != nil {
					return err
				}
			}
			if d.Close != nil {
				return fmt.Errorf("task %s has ended (%s); it can no longer be changed", id, d.State)
			}
			h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: id, RunID: d.RunID, UpdateName: workflows.UpdateModify,
				Args: []any{m}, WaitForStage: client.WorkflowUpdateStageCompleted})
			var res workflows.ModifyResult
			if err == nil {
				err = h.Get(ctx, &res)
			}
			if err != nil {
				return fmt.Errorf("task %s was not changed: %s", id, rootMessage(err))
			}
			plan := "starts " + res.StartAt.Local().Format(time.DateTime+" MST")
			if t := (taskRow{Group: res.Group, Terminals: res.Terminals}).target(); t != "" {
				plan += ", works on " + t
			}
			if res.Image != "" {
				plan += ", image " + res.Image
			}
			fmt.Fprintf(a.Stdout, "task %s changed: it %s\n", id, plan)
			return nil
		},
	}
	atFlag(c, &at)
	c.Flags().StringVar(&group, "group", "", "deploy to this group instead")
	c.Flags().StringSliceVar(&terminals, "terminal", nil, "deploy to these terminals instead (repeat, or separate with commas)")
	c.Flags().StringVar(&image, "image", "", "image to deploy, capture into or share instead")
	return c
}

// maxDeletedChildren bounds the child workflows `tms task rm` deletes with a task.
const maxDeletedChildren = 1000

func (a *App) taskRm() *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Delete a finished task (and its per-terminal tasks) from the listing and from Temporal",
		Long: `rm deletes a task that has ended, with its history and its child tasks (a deploy's
per-terminal tasks and its share): 'tms task ls --all' and the Temporal UI no longer show it.
What the task did stays done. A task under way is refused: cancel it first.`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			id := args[0]
			d, err := c.describe(ctx, id, false)
			if err != nil {
				return err
			}
			if d.Close == nil {
				return fmt.Errorf("task %s is %s: cancel it first ('tms task cancel %s')", id, d.State, id)
			}
			// Its children first: a failure leaves the task listed, so rm can be run again.
			q, err := quote(id)
			if err != nil {
				return fmt.Errorf("task id %s: %w", id, err)
			}
			resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
				Namespace: c.cfg.Namespace, Query: "ParentWorkflowId = " + q, PageSize: maxDeletedChildren})
			if err != nil {
				return fmt.Errorf("cannot list the child tasks of %s: %w", id, err)
			}
			children := 0
			for _, e := range resp.Executions {
				if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
					continue // a parent that ended abandons no child here; leave a stray one alone
				}
				if err := c.deleteRun(ctx, e.GetExecution()); err != nil {
					return err
				}
				children++
			}
			if err := c.deleteRun(ctx, &commonpb.WorkflowExecution{WorkflowId: id, RunId: d.RunID}); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "task %s (%s) deleted with %d child task(s)\n", id, d.State, children)
			return nil
		},
	}
}

func (c *tclient) deleteRun(ctx context.Context, e *commonpb.WorkflowExecution) error {
	if _, err := c.WorkflowService().DeleteWorkflowExecution(ctx, &workflowservice.DeleteWorkflowExecutionRequest{
		Namespace: c.cfg.Namespace, WorkflowExecution: e}); err != nil {
		return fmt.Errorf("cannot delete task %s: %w", e.GetWorkflowId(), notFound(err, e.GetWorkflowId()))
	}
	return nil
}
