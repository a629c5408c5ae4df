package cli

import (
	"context"
	"encoding/json"
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
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/transfer"
	"tms/workflows"
)

// Captures, deploys and shares are long workflows: the commands start them and, with --wait,
// follow them to the end. `tms task` lists, shows and cancels them.

// taskTypes are the workflow types `tms task ls` lists: the work admins start and follow.
var taskTypes = []string{workflows.NameCaptureImage, workflows.NameDeployImage, workflows.NameDeployTerminal, workflows.NameShareImage}

func (a *App) imageCapture() *cobra.Command {
	var region, terminal string
	var wait bool
	c := &cobra.Command{
		Use:   "capture --region REGION --terminal TERMINAL NAME [--wait]",
		Short: "Capture a terminal's disk as a new version of image NAME (NAME:latest)",
		Long: `Capture reboots the terminal into the tms agent, which uploads the disk's chunks the region
lacks; the region checks and publishes the new version as NAME:latest and records it in
central's catalog. The terminal boots from its own disk again afterwards, whatever happens.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "region", region); err != nil {
				return err
			}
			if err := requireFlag(cmd, "terminal", terminal); err != nil {
				return err
			}
			in := workflows.CaptureImageInput{Region: region, TerminalRef: terminal, Image: args[0]}
			id := workflows.CaptureWorkflowID(region, terminal, args[0])
			return a.startTask(cmd, region, activities.RegionQueue(region), id, workflows.CaptureImage, in, wait,
				fmt.Sprintf("capture of terminal %s into image %s in region %s", terminal, args[0], region))
		},
	}
	regionFlag(c, &region)
	c.Flags().StringVar(&terminal, "terminal", "", "terminal to capture: name or MAC (required)")
	c.Flags().BoolVar(&wait, "wait", false, "follow the capture until it ends")
	return c
}

func (a *App) imageShare() *cobra.Command {
	var to string
	var wait bool
	c := &cobra.Command{
		Use:   "share IMAGE --to REGION [--wait]",
		Short: "Copy an image version (NAME, NAME:TAG or NAME@VERSION) to a region's store",
		Long: `Share makes the version IMAGE names present and verified in region REGION: directly from the
nearest region that holds it, or through central's store if peers cannot be reached.
Nothing is copied if the region already holds it.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "to", to); err != nil {
				return err
			}
			in := workflows.ShareImageInput{Image: args[0], Target: to}
			return a.startTask(cmd, to, activities.CentralQueue, workflows.ShareWorkflowID(args[0], to), workflows.ShareImage, in, wait,
				fmt.Sprintf("share of %s to region %s", args[0], to))
		},
	}
	c.Flags().StringVar(&to, "to", "", "region to copy the image to (required)")
	c.Flags().BoolVar(&wait, "wait", false, "follow the share until it ends")
	return c
}

func (a *App) deployCommand() *cobra.Command {
	var region, group string
	var terminals []string
	var concurrency int
	var wait bool
	c := &cobra.Command{
		Use:   "deploy --region REGION (--group GROUP | --terminal TERMINAL...) IMAGE [--concurrency N] [--wait]",
		Short: "Write an image to the disks of a group of terminals or of some terminals",
		Long: `Deploy first makes IMAGE (NAME, NAME:TAG or NAME@VERSION) local to the region, then reboots
each terminal into the tms agent, which writes the blocks that differ and reads the disk back
to verify it. A terminal that fails is reported and the others go on.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "region", region); err != nil {
				return err
			}
			switch {
			case group != "" && len(terminals) > 0:
				return usageError{fmt.Errorf("%s: give --group or --terminal, not both", cmd.CommandPath())}
			case group == "" && len(terminals) == 0:
				return usageError{fmt.Errorf("%s: --group or --terminal is required", cmd.CommandPath())}
			case concurrency < 0:
				return usageError{fmt.Errorf("%s: --concurrency must be positive", cmd.CommandPath())}
			}
			in := workflows.DeployImageInput{Region: region, Group: group, Terminals: terminals, Image: args[0], Concurrency: concurrency}
			target := "group " + group
			if group == "" {
				target = "terminal(s) " + strings.Join(terminals, ", ")
			}
			return a.startTask(cmd, region, activities.RegionQueue(region), workflows.DeployWorkflowID(region, group, terminals, args[0]),
				workflows.DeployImage, in, wait, fmt.Sprintf("deploy of %s to %s in region %s", args[0], target, region))
		},
	}
	regionFlag(c, &region)
	c.Flags().StringVar(&group, "group", "", "group to deploy")
	c.Flags().StringSliceVar(&terminals, "terminal", nil, "terminal to deploy, name or MAC (repeat, or separate with commas)")
	c.Flags().IntVar(&concurrency, "concurrency", 0, "terminals deployed at once (default 10)")
	c.Flags().BoolVar(&wait, "wait", false, "follow the deploy until it ends")
	return c
}

// startTask checks the region, starts a long workflow and either says how to follow it or,
// with wait, follows it to its end.
func (a *App) startTask(cmd *cobra.Command, region, queue, id string, wf, in any, wait bool, what string) error {
	ctx := cmd.Context()
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.checkRegion(ctx, region); err != nil {
		return err
	}
	_, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: queue,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, wf, in)
	if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		return fmt.Errorf("a %s is already running as task %s: follow it with 'tms task show %s', or cancel it with 'tms task cancel %s'", what, id, id, id)
	}
	if err != nil {
		return fmt.Errorf("cannot start the %s: %w", what, err)
	}
	if !wait {
		fmt.Fprintf(a.Stdout, "started %s: task %s\nfollow it with: tms task show %s\n            or: %s\n", what, id, id, c.uiURL(id))
		return nil
	}
	fmt.Fprintf(a.Stderr, "started %s: task %s\n", what, id)
	return a.follow(ctx, c, id)
}

// follow shows a workflow's progress until it ends, then its outcome.
func (a *App) follow(ctx context.Context, c *tclient, id string) error {
	run := c.GetWorkflow(ctx, id, "")
	type outcome struct {
		raw json.RawMessage
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		var raw json.RawMessage
		err := run.Get(ctx, &raw)
		done <- outcome{raw, err}
	}()
	tty := a.progressOn()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var printed time.Time
	start := time.Now()
	for {
		select {
		case o := <-done:
			if tty {
				fmt.Fprint(a.Stderr, "\r\x1b[K")
			}
			if ctx.Err() != nil {
				return fmt.Errorf("stopped following task %s; it goes on: 'tms task show %s' follows it, 'tms task cancel %s' stops it: %w", id, id, id, ctx.Err())
			}
			if o.err != nil {
				return fmt.Errorf("task %s failed: %s", id, rootMessage(o.err))
			}
			d, err := c.describe(ctx, id, false)
			if err != nil {
				return err
			}
			d.Result = o.raw
			fmt.Fprintf(a.Stdout, "task %s completed: %s\n", id, resultSummary(d.Type, o.raw))
			return nil
		case <-tick.C:
			d, err := c.describe(ctx, id, true)
			if err != nil {
				continue // the next tick tries again; the outcome comes through done
			}
			line := fmt.Sprintf("%s %s", clock(time.Since(start)), d.progressLine())
			switch {
			case tty:
				fmt.Fprint(a.Stderr, "\r"+line+"\x1b[K")
			case time.Since(printed) >= 5*time.Second:
				fmt.Fprintln(a.Stderr, line)
				printed = time.Now()
			}
		}
	}
}

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

// pendingActivity is a step of a task under way.
type pendingActivity struct {
	Type          string     `json:"type"`
	State         string     `json:"state"`
	Attempt       int32      `json:"attempt"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	// Progress is the step's last heartbeat: an agent's report (activities.AgentProgress) or a
	// transfer's (transfer.Progress), as they come.
	Progress    json.RawMessage `json:"progress,omitempty"`
	LastFailure string          `json:"last_failure,omitempty"`
	progress    string
}

// taskDetail is the output of `tms task show`.
type taskDetail struct {
	ID        string            `json:"id"`
	RunID     string            `json:"run_id"`
	Type      string            `json:"type"`
	Status    string            `json:"status"`
	Start     time.Time         `json:"start"`
	Close     *time.Time        `json:"close,omitempty"`
	TaskQueue string            `json:"task_queue"`
	Progress  json.RawMessage   `json:"progress,omitempty"`
	Pending   []pendingActivity `json:"pending_activities"`
	Children  []string          `json:"children,omitempty"`
	Failure   string            `json:"failure,omitempty"`
	Result    json.RawMessage   `json:"result,omitempty"`
	Summary   string            `json:"summary,omitempty"`
	URL       string            `json:"url"`
	// children are the running child tasks of a deploy, for its progress line.
	children []*taskDetail
}

// maxFollowedChildren bounds the child tasks a deploy's progress line asks about each time.
const maxFollowedChildren = 64

// describe gathers what Temporal knows of a task; with query, also the workflow's own
// progress report while it runs.
func (c *tclient) describe(ctx context.Context, id string, query bool) (*taskDetail, error) {
	resp, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return nil, notFound(err, id)
	}
	info := resp.GetWorkflowExecutionInfo()
	d := &taskDetail{ID: id, RunID: info.GetExecution().GetRunId(), Type: info.GetType().GetName(), Status: info.GetStatus().String(),
		Start: info.GetStartTime().AsTime(), TaskQueue: info.GetTaskQueue(), Pending: []pendingActivity{}, URL: c.uiURL(id)}
	if info.GetCloseTime() != nil {
		t := info.GetCloseTime().AsTime()
		d.Close = &t
	}
	for _, pa := range resp.GetPendingActivities() {
		p := pendingActivity{Type: pa.GetActivityType().GetName(), State: strings.ToLower(strings.TrimPrefix(pa.GetState().String(), "PENDING_ACTIVITY_STATE_")),
			Attempt: pa.GetAttempt()}
		if pa.GetLastHeartbeatTime() != nil {
			t := pa.GetLastHeartbeatTime().AsTime()
			p.LastHeartbeat = &t
		}
		if f := pa.GetLastFailure(); f != nil {
			p.LastFailure = f.GetMessage()
		}
		p.Progress, p.progress = heartbeat(p.Type, pa.GetHeartbeatDetails())
		d.Pending = append(d.Pending, p)
	}
	for _, ch := range resp.GetPendingChildren() {
		d.Children = append(d.Children, ch.GetWorkflowId())
	}
	if info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING && query {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if v, err := c.QueryWorkflow(qctx, id, "", workflows.QueryProgress); err == nil {
			var raw json.RawMessage
			if v.Get(&raw) == nil {
				d.Progress = raw
			}
		}
		// A deploy's bytes move in its children: the share, and one task per terminal.
		if d.Type == workflows.NameDeployImage {
			for i, ch := range d.Children {
				if i == maxFollowedChildren {
					break
				}
				if cd, err := c.describe(ctx, ch, false); err == nil {
					d.children = append(d.children, cd)
				}
			}
		}
	}
	return d, nil
}

// heartbeat decodes a pending activity's last heartbeat: an agent's report for the activities
// that wait for a terminal, a transfer's position for those that copy an image.
func heartbeat(activity string, details *commonpb.Payloads) (json.RawMessage, string) {
	if details == nil || len(details.Payloads) == 0 {
		return nil, ""
	}
	dc := converter.GetDefaultDataConverter()
	switch activity {
	case activities.NameWaitForAgent:
		var p activities.AgentProgress
		if dc.FromPayloads(details, &p) == nil {
			raw, _ := json.Marshal(p)
			s := string(p.Phase)
			if p.Total > 0 {
				s += fmt.Sprintf(" %.1f%% (%s / %s)", 100*float64(p.Done)/float64(p.Total), humanBytes(p.Done), humanBytes(p.Total))
			}
			return raw, s
		}
	case activities.NamePullFromPeer, activities.NamePullFromRelay, activities.NamePushToRelay:
		var p transfer.Progress
		if dc.FromPayloads(details, &p) == nil {
			raw, _ := json.Marshal(p)
			s := fmt.Sprintf("%d/%d chunks", p.Done, p.Total)
			if p.Total > 0 {
				s = fmt.Sprintf("%.1f%% (%s), %s moved", 100*float64(p.Done)/float64(p.Total), s, humanBytes(p.MovedBytes))
			}
			return raw, s
		}
	}
	var raw json.RawMessage
	if dc.FromPayloads(details, &raw) == nil {
		return raw, ""
	}
	return nil, ""
}

// progressLine says in one line where a running task is.
func (d *taskDetail) progressLine() string {
	var parts []string
	switch d.Type {
	case workflows.NameCaptureImage:
		var p workflows.CaptureProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			parts = append(parts, "capture of "+p.Name+": "+string(p.Phase))
		}
	case workflows.NameDeployTerminal:
		var p workflows.TerminalProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			parts = append(parts, "deploy of "+p.Name+": "+string(p.Phase))
		}
	case workflows.NameShareImage:
		var p workflows.ShareProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			s := "share: " + string(p.Phase)
			if p.Source != "" {
				s += " from " + p.Source
			}
			parts = append(parts, s)
		}
	case workflows.NameDeployImage:
		var p workflows.DeployProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			count := map[workflows.Phase]int{}
			for _, t := range p.Terminals {
				count[t.Phase]++
			}
			s := "deploy: " + string(p.Phase)
			if len(p.Terminals) > 0 {
				s += fmt.Sprintf(" (%d terminals: %d done, %d failed, %d deploying, %d queued)",
					len(p.Terminals), count[workflows.PhaseDone], count[workflows.PhaseFailed], count[workflows.PhaseDeploying], count[workflows.PhaseQueued])
			}
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		parts = append(parts, d.Type+" "+strings.ToLower(d.Status))
	}
	for _, p := range d.Pending {
		if p.progress != "" {
			parts = append(parts, p.progress)
		}
	}
	var agents activities.AgentProgress
	reporting := 0
	for _, ch := range d.children {
		for _, p := range ch.Pending {
			var ap activities.AgentProgress
			switch {
			case p.Type == activities.NameWaitForAgent && json.Unmarshal(p.Progress, &ap) == nil && ap.Total > 0:
				agents.Done += ap.Done
				agents.Total += ap.Total
				reporting++
			case ch.Type == workflows.NameShareImage && p.progress != "":
				parts = append(parts, "share "+p.progress)
			}
		}
	}
	if reporting > 0 {
		parts = append(parts, fmt.Sprintf("%d terminal(s) reporting %.1f%% (%s / %s)", reporting,
			100*float64(agents.Done)/float64(agents.Total), humanBytes(agents.Done), humanBytes(agents.Total)))
	}
	return strings.Join(parts, "; ")
}

// resultSummary says in one line what a finished task did.
func resultSummary(typ string, raw json.RawMessage) string {
	switch typ {
	case workflows.NameCaptureImage:
		var r workflows.CaptureImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			return fmt.Sprintf("terminal %s captured as %s@%s (%s disk, %s stored)", r.TerminalRef, r.Image, short(r.Version), humanBytes(r.DiskSize), humanBytes(r.StoredBytes))
		}
	case workflows.NameShareImage:
		var r workflows.ShareImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			if r.Path == workflows.PathLocal {
				return fmt.Sprintf("version %s was already there", short(r.Version))
			}
			return fmt.Sprintf("version %s copied from %s by %s, %s moved", short(r.Version), r.Source, r.Path, humanBytes(r.MovedBytes))
		}
	case workflows.NameDeployImage:
		var r workflows.DeployImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			s := fmt.Sprintf("version %s written to %d of %d terminals", short(r.Version), len(r.Terminals)-r.Failed, len(r.Terminals))
			for _, t := range r.Terminals {
				if !t.OK {
					s += "; " + t.Name + " failed: " + t.Error
				}
			}
			return s
		}
	case workflows.NameDeployTerminal:
		var r workflows.TerminalOutcome
		if json.Unmarshal(raw, &r) == nil {
			return fmt.Sprintf("terminal %s: %d chunks written (%s), %d already right", r.Name, r.Written, humanBytes(r.WrittenBytes), r.Skipped)
		}
	}
	return "done"
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
