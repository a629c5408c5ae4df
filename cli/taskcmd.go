package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/workflowservice/v1"

	"tms/activities"
	"tms/workflows"
)

// `tms task ls`, `show` and `cancel`: the long workflows admins start, as Temporal knows them.

// taskTypes are the workflow types `tms task ls` lists: the work admins start and follow.
var taskTypes = []string{workflows.NameCaptureImage, workflows.NameDeployImage, workflows.NameDeployTerminal, workflows.NameShareImage}

// taskRow is one line of `tms task ls`.
type taskRow struct {
	ID        string     `json:"id"`
	Type      string     `json:"type"`
	Status    string     `json:"status"`
	Start     time.Time  `json:"start"`
	Close     *time.Time `json:"close,omitempty"`
	TaskQueue string     `json:"task_queue"`
}

func (a *App) taskCommand() *cobra.Command {
	c := &cobra.Command{Use: "task", Short: "List, show and cancel captures, deploys and shares"}
	c.AddCommand(a.taskLs(), a.taskShow(), a.taskCancel())
	return c
}

func (a *App) taskLs() *cobra.Command {
	var region string
	var all, asJSON bool
	var limit int
	c := &cobra.Command{
		Use:   "ls [--region REGION] [--all] [--limit N] [--json]",
		Short: "List running captures, deploys and shares (with --all, finished ones too), newest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit <= 0 {
				return usageError{fmt.Errorf("%s: --limit must be positive", cmd.CommandPath())}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			q := "WorkflowType IN ('" + strings.Join(taskTypes, "','") + "')"
			if !all {
				q += " AND ExecutionStatus = 'Running'"
			}
			if region != "" {
				q += " AND TaskQueue = '" + strings.ReplaceAll(activities.RegionQueue(region), "'", "") + "'"
			}
			rows := []taskRow{}
			var token []byte
			for len(rows) < limit {
				resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
					Namespace: c.cfg.Namespace, Query: q, PageSize: int32(limit), NextPageToken: token})
				if err != nil {
					return fmt.Errorf("cannot list tasks: %w", err)
				}
				for _, e := range resp.Executions {
					r := taskRow{ID: e.GetExecution().GetWorkflowId(), Type: e.GetType().GetName(), Status: e.GetStatus().String(),
						Start: e.GetStartTime().AsTime(), TaskQueue: e.GetTaskQueue()}
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
			fmt.Fprintln(tw, "TASK\tTYPE\tSTATUS\tSTARTED")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Type, r.Status, r.Start.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&region, "region", "", "only the captures and deploys of this region")
	c.Flags().BoolVar(&all, "all", false, "include finished tasks")
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
				} else {
					d.Result, d.Summary = raw, resultSummary(d.Type, raw)
				}
			}
			if asJSON {
				return a.printJSON(d)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			p := func(k, f string, args ...any) { fmt.Fprintf(tw, k+":\t"+f+"\n", args...) }
			p("Task", "%s", d.ID)
			p("Type", "%s", d.Type)
			p("Status", "%s", d.Status)
			p("Started", "%s", d.Start.Local().Format(time.DateTime))
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
		Long: `Cancel asks the task to stop. A capture or deploy stops waiting for its terminals and sets
their next boot back to their own disk (a deploy interrupted mid-write leaves that disk
incomplete until it is deployed again); a share stops its transfer and records nothing.`,
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
			fmt.Fprintf(a.Stdout, "cancel requested for task %s: its terminals are set back to boot from their own disk; 'tms task show %s' says when it has stopped\n", id, id)
			return nil
		},
	}
}
