package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/settings"
	"tms/workflows"
)

// Captures, deploys and shares are long workflows: the commands start them and, with --wait,
// follow them to the end. `tms task` lists, shows and cancels them.

func (a *App) imageCapture() *cobra.Command {
	var region, terminal, at string
	var wait bool
	c := &cobra.Command{
		Use:   "capture --region REGION --terminal TERMINAL NAME [--at TIME] [--wait]",
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
			startAt, err := a.startAt(cmd, region, at)
			if err != nil {
				return err
			}
			in := workflows.CaptureImageInput{Region: region, TerminalRef: terminal, Image: args[0], StartAt: startAt}
			id := workflows.Stamped(workflows.CaptureWorkflowID(region, terminal, args[0]), a.now())
			tags := workflows.TaskTags{Region: region, Kind: workflows.TaskCapture, Terminals: []string{terminal}, Image: args[0], StartAt: startAt}
			return a.runTask(cmd, taskRequest{Region: region, Queue: activities.RegionQueue(region), ID: id, Tags: tags,
				Workflow: workflows.CaptureImage, Input: in,
				What: fmt.Sprintf("capture of terminal %s into image %s in region %s", terminal, args[0], region)}, wait)
		},
	}
	regionFlag(c, &region)
	c.Flags().StringVar(&terminal, "terminal", "", "terminal to capture: name or MAC (required)")
	atFlag(c, &at)
	c.Flags().BoolVar(&wait, "wait", false, "follow the capture until it ends")
	return c
}

func (a *App) imageShare() *cobra.Command {
	var to, at, rate string
	var wait bool
	c := &cobra.Command{
		Use:   "share IMAGE --to REGION [--rate RATE] [--at TIME] [--wait]",
		Short: "Copy an image version (NAME, NAME:TAG or NAME@VERSION) to a region's store",
		Long: `Share makes the version IMAGE names present and verified in region REGION: directly from the
nearest region that holds it, or through central's store if peers cannot be reached.
Nothing is copied if the region already holds it.

The regions' WAN caps (the settings wan_rate and wan_rate_windows) pace the transfer; --rate
caps it lower still, like --rate 5MB/s or --rate 40Mbit/s.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd, "to", to); err != nil {
				return err
			}
			var bytesPerSec int64
			if rate != "" {
				var err error
				if bytesPerSec, err = settings.ParseRate(rate); err != nil {
					return usageError{fmt.Errorf("%s: --rate: %w", cmd.CommandPath(), err)}
				}
			}
			startAt, err := a.startAt(cmd, to, at)
			if err != nil {
				return err
			}
			in := workflows.ShareImageInput{Image: args[0], Target: to, StartAt: startAt, Rate: bytesPerSec}
			id := workflows.Stamped(workflows.ShareWorkflowID(args[0], to), a.now())
			tags := workflows.TaskTags{Region: to, Kind: workflows.TaskShare, Image: args[0], StartAt: startAt}
			return a.runTask(cmd, taskRequest{Region: to, Queue: activities.CentralQueue, ID: id, Tags: tags,
				Workflow: workflows.ShareImage, Input: in, What: fmt.Sprintf("share of %s to region %s", args[0], to)}, wait)
		},
	}
	c.Flags().StringVar(&to, "to", "", "region to copy the image to (required)")
	c.Flags().StringVar(&rate, "rate", "", "cap the transfer at RATE, below the regions' own WAN caps: like 5MB/s, 40Mbit/s or 500KiB/s")
	atFlag(c, &at)
	c.Flags().BoolVar(&wait, "wait", false, "follow the share until it ends")
	return c
}

func (a *App) deployCommand() *cobra.Command {
	var tg targets
	var at string
	var concurrency int
	var wait bool
	c := &cobra.Command{
		Use:   "deploy --region REGION (--group GROUP | --terminal TERMINAL...) IMAGE [--concurrency N] [--at TIME] [--wait]",
		Short: "Write an image to the disks of a group of terminals or of some terminals",
		Long: `Deploy first makes IMAGE (NAME, NAME:TAG or NAME@VERSION) local to the region, then reboots
each terminal into the tms agent, which writes the blocks that differ and reads the disk back
to verify it. A terminal that fails is reported and the others go on.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tg.check(cmd); err != nil {
				return err
			}
			if concurrency < 0 {
				return usageError{fmt.Errorf("%s: --concurrency must be positive", cmd.CommandPath())}
			}
			region, group, terminals := tg.region, tg.group, tg.terminals
			startAt, err := a.startAt(cmd, region, at)
			if err != nil {
				return err
			}
			in := workflows.DeployImageInput{Region: region, Group: group, Terminals: terminals, Image: args[0], Concurrency: concurrency, StartAt: startAt}
			id := workflows.Stamped(workflows.DeployWorkflowID(region, group, terminals, args[0]), a.now())
			tags := workflows.TaskTags{Region: region, Kind: workflows.TaskDeploy, Group: group, Terminals: terminals, Image: args[0], StartAt: startAt}
			return a.runTask(cmd, taskRequest{Region: region, Queue: activities.RegionQueue(region), ID: id, Tags: tags,
				Workflow: workflows.DeployImage, Input: in, What: fmt.Sprintf("deploy of %s to %s in region %s", args[0], &tg, region)}, wait)
		},
	}
	tg.flags(c, "deploy")
	c.Flags().IntVar(&concurrency, "concurrency", 0, "terminals deployed at once (default: all of them; they fetch chunks from each other)")
	atFlag(c, &at)
	c.Flags().BoolVar(&wait, "wait", false, "follow the deploy until it ends")
	return c
}

// atFlag adds --at TIME to a task command.
func atFlag(c *cobra.Command, at *string) {
	c.Flags().StringVar(at, "at", "", "start at TIME (HH:MM today, YYYY-MM-DD HH:MM, in the region's time zone, or RFC 3339) instead of now; until then 'tms task modify' changes the task")
}

// startAt parses a task command's --at in region's time zone; zero when it was not given
// (start now).
func (a *App) startAt(cmd *cobra.Command, region, at string) (time.Time, error) {
	if at == "" {
		return time.Time{}, nil
	}
	if a.plan != nil {
		return time.Time{}, usageError{fmt.Errorf("%s: --at cannot be given to a scheduled task: it starts when its schedule fires", cmd.CommandPath())}
	}
	loc := time.Local
	if region != "" {
		c, err := a.dial(cmd.Context())
		if err != nil {
			return time.Time{}, err
		}
		defer c.Close()
		info, err := c.regionInfo(cmd.Context(), region)
		if err != nil {
			return time.Time{}, err
		}
		// A region that has not reported its zone (an older tms) gets this machine's.
		if info.Timezone != "" {
			if loc, err = regionZone(info, ""); err != nil {
				return time.Time{}, err
			}
		}
	}
	t, err := a.parseAt(at, loc)
	if err != nil {
		return t, usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
	}
	return t, nil
}

// taskRequest is a task a command asks for: the workflow, its input, and where and under which
// id it runs. Task commands build one and hand it to runTask, so that a schedule can take the
// same command line (`tms schedule create NAME --at T deploy ...`) and run it later.
type taskRequest struct {
	Region   string // checked against central's regions before the task starts
	Queue    string // the task queue the workflow runs on
	ID       string // readable and unique per run (workflows.Stamped)
	Tags     workflows.TaskTags
	Workflow any // the workflow function
	Input    any
	What     string // for people: "deploy of lab to group room1 in region region-b"
	// JSON prints the started task, and with wait its result, as JSON instead of text.
	JSON bool
}

// runTask starts the task a command asks for, or, when a schedule is reading the command
// (a.plan is set), hands it to the schedule instead.
func (a *App) runTask(cmd *cobra.Command, req taskRequest, wait bool) error {
	if a.plan != nil {
		return a.plan(req)
	}
	return a.startTask(cmd, req, wait)
}

// startTask checks the region, starts a long workflow tagged with what it is about and either
// says how to follow it or, with wait, follows it to its end.
func (a *App) startTask(cmd *cobra.Command, req taskRequest, wait bool) error {
	region, id, what := req.Region, req.ID, req.What
	ctx := cmd.Context()
	c, err := a.dialRegion(ctx, region)
	if err != nil {
		return err
	}
	defer c.Close()
	// Who started it: the logged-in user (unset without a login).
	req.Tags.StartedBy = c.user
	_, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: req.Queue, TypedSearchAttributes: req.Tags.StartAttributes(),
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, req.Workflow, req.Input)
	if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		return fmt.Errorf("a %s is already running as task %s: follow it with 'tms task show %s', or cancel it with 'tms task cancel %s'", what, id, id, id)
	}
	if err != nil {
		return fmt.Errorf("cannot start the %s: %w", what, err)
	}
	if at := req.Tags.StartAt; !at.IsZero() {
		what += ", waiting until " + at.Local().Format(time.DateTime+" MST")
	}
	if !wait {
		if req.JSON {
			return a.printJSON(taskJSON{Task: id, UI: c.uiURL(id)})
		}
		fmt.Fprintf(a.Stdout, "started %s: task %s\nfollow it with: tms task show %s\n            or: %s\n", what, id, id, c.uiURL(id))
		return nil
	}
	fmt.Fprintf(a.Stderr, "started %s: task %s\n", what, id)
	return a.followAs(ctx, c, id, req.JSON)
}

// taskJSON is a started or finished task as --json prints it.
type taskJSON struct {
	Task   string
	UI     string          `json:",omitempty"`
	Error  string          `json:",omitempty"`
	Result json.RawMessage `json:",omitempty"` // a failed task's partial result, if it has one
}

// followAs shows a workflow's progress until it ends, then its outcome, as JSON if asJSON.
func (a *App) followAs(ctx context.Context, c *tclient, id string, asJSON bool) error {
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
				if asJSON {
					out := taskJSON{Task: id, Error: rootMessage(o.err)}
					var ae *temporal.ApplicationError
					if errors.As(o.err, &ae) && ae.HasDetails() {
						_ = ae.Details(&out.Result)
					}
					if err := a.printJSON(out); err != nil {
						return err
					}
				}
				return fmt.Errorf("task %s failed: %s", id, rootMessage(o.err))
			}
			if asJSON {
				return a.printJSON(taskJSON{Task: id, Result: o.raw})
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

// targets are the --region, --group and --terminal flags of a task over terminals (deploy,
// update, power).
type targets struct {
	region, group string
	terminals     []string
}

// flags adds the flags to c; verb says what the task does to them ("deploy", "power on").
func (t *targets) flags(c *cobra.Command, verb string) {
	regionFlag(c, &t.region)
	c.Flags().StringVar(&t.group, "group", "", "group to "+verb)
	c.Flags().StringSliceVar(&t.terminals, "terminal", nil, "terminal to "+verb+", name or MAC (repeat, or separate with commas)")
}

// check refuses a command line without a region, or without exactly one of group and terminals.
func (t *targets) check(cmd *cobra.Command) error {
	if err := requireFlag(cmd, "region", t.region); err != nil {
		return err
	}
	switch {
	case t.group != "" && len(t.terminals) > 0:
		return usageError{fmt.Errorf("%s: give --group or --terminal, not both", cmd.CommandPath())}
	case t.group == "" && len(t.terminals) == 0:
		return usageError{fmt.Errorf("%s: --group or --terminal is required", cmd.CommandPath())}
	}
	return nil
}

// String names the targets for people: "group lab" or "terminal(s) pc1, pc2".
func (t *targets) String() string {
	if t.group != "" {
		return "group " + t.group
	}
	return "terminal(s) " + strings.Join(t.terminals, ", ")
}
