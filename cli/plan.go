package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/settings"
	"tms/workflows"
)

// Plans are PlanImage workflows (id plan/NAME, on central's queue): `tms plan ls` lists them
// from Temporal's visibility store and asks each running one for its progress (a query) or
// reads an ended one's result.

func (a *App) planCommand() *cobra.Command {
	c := &cobra.Command{Use: "plan", Short: "Send images to regions ahead of need: a plan says which image must be in which regions by when"}
	c.AddCommand(a.planCreate(), a.planLs(), a.planShow(), a.planRm())
	return c
}

func (a *App) planCreate() *cobra.Command {
	var image, regions, by, window, rate, zone string
	var margin time.Duration
	c := &cobra.Command{
		Use:   "create NAME --image IMAGE --regions R1,R2 --by TIME [--window HH:MM-HH:MM] [--rate RATE]",
		Short: "Have an image verified in regions by a time, sent inside a window at no more than a rate",
		Long: `Create starts a pre-distribution plan: IMAGE (NAME, NAME:TAG or NAME@VERSION, resolved now)
must be verified in each region by TIME. Each region's share runs inside --window (HH:MM-HH:MM,
in that region's time zone; it may cross midnight), at no more than --rate (like 20MB/s or
100Mbit/s; the regions' own WAN caps hold too); a share the window closes on goes on in the next
window. At TIME minus --margin (default 30m) each region's readiness is checked: those not ready
are reported ('tms plan show', 'tms status', the metric tms_plan_regions{state="not-ready"}).
Before a share, the region makes room, evicting the oldest images that nothing needs, and keeps
the image for the plan until TIME.
TIME is read like --at: HH:MM (today), YYYY-MM-DD HH:MM in the regions' zone, or RFC 3339.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, f := range []struct{ name, v string }{{"image", image}, {"regions", regions}, {"by", by}} {
				if err := requireFlag(cmd, f.name, f.v); err != nil {
					return err
				}
			}
			in := workflows.PlanInput{Name: args[0], Image: image, Window: window, Margin: margin}
			for _, r := range strings.Split(regions, ",") {
				if r = strings.TrimSpace(r); r != "" {
					in.Regions = append(in.Regions, r)
				}
			}
			if cmd.Flags().Changed("rate") {
				r, err := settings.ParseRate(rate)
				if err != nil {
					return usageError{fmt.Errorf("%s: --rate: %w", cmd.CommandPath(), err)}
				}
				if r == 0 {
					return usageError{fmt.Errorf("%s: --rate %q: a plan's rate must be above zero; leave --rate out for the regions' own caps", cmd.CommandPath(), rate)}
				}
				in.Rate = r
			}
			if window != "" {
				if _, err := settings.ParseWindow(window); err != nil {
					return usageError{fmt.Errorf("%s: --window: %w", cmd.CommandPath(), err)}
				}
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			loc, err := c.regionsZone(ctx, in.Regions, zone)
			if err != nil {
				return err
			}
			t, err := a.parseAt(by, loc)
			if err != nil {
				return usageError{fmt.Errorf("%s: %s", cmd.CommandPath(), strings.Replace(err.Error(), "--at", "--by", 1))}
			}
			in.By = t
			if err := workflows.CheckPlan(in, a.now()); err != nil {
				return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
			}
			if _, err := c.centralVersion(ctx, image); err != nil {
				return err
			}
			tags := workflows.TaskTags{Kind: workflows.TaskPlan, Image: image, StartedBy: c.user}
			_, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: workflows.PlanWorkflowID(in.Name), TaskQueue: activities.CentralQueue, TypedSearchAttributes: tags.StartAttributes(),
				WorkflowExecutionErrorWhenAlreadyStarted: true,
			}, workflows.PlanImage, in)
			if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
				return fmt.Errorf("plan %s exists and runs: 'tms plan show %s' shows it, 'tms plan rm %s' removes it", in.Name, in.Name, in.Name)
			}
			if err != nil {
				return fmt.Errorf("cannot start plan %s: %w", in.Name, err)
			}
			what := fmt.Sprintf("plan %s: %s to %s by %s", in.Name, image, strings.Join(in.Regions, ", "), in.By.In(loc).Format("2006-01-02 15:04 MST"))
			if window != "" {
				what += ", inside " + window
			}
			if in.Rate > 0 {
				what += ", at most " + settings.FormatRate(in.Rate)
			}
			fmt.Fprintf(a.Stdout, "started %s\nfollow it with: tms plan show %s\n", what, in.Name)
			return nil
		},
	}
	c.Flags().StringVar(&image, "image", "", "the image: NAME, NAME:TAG or NAME@VERSION (required)")
	c.Flags().StringVar(&regions, "regions", "", "the regions, comma-separated (required)")
	c.Flags().StringVar(&by, "by", "", "when the image must be ready in every region (required)")
	c.Flags().StringVar(&window, "window", "", "HH:MM-HH:MM in each region's zone: shares run only then")
	c.Flags().StringVar(&rate, "rate", "", "cap each share at RATE (like 20MB/s or 100Mbit/s)")
	c.Flags().DurationVar(&margin, "margin", workflows.DefaultPlanMargin, "how long before --by the readiness check runs")
	c.Flags().StringVar(&zone, "timezone", "", "read --by in this IANA zone instead of the regions'")
	return c
}

// regionsZone is the zone --by is read in: override, else the regions' common zone; regions in
// different zones need an RFC 3339 time or --timezone.
func (c *tclient) regionsZone(ctx context.Context, regions []string, override string) (*time.Location, error) {
	var loc *time.Location
	for _, r := range regions {
		info, err := c.regionInfo(ctx, r)
		if err != nil {
			return nil, err
		}
		l, err := regionZone(info, override)
		if err != nil {
			return nil, err
		}
		if loc != nil && l.String() != loc.String() {
			return nil, usageError{fmt.Errorf("regions %s and %s are in different time zones (%s, %s): give --by as RFC 3339 (2026-12-07T07:00:00+01:00) or --timezone", regions[0], r, loc, l)}
		}
		loc = l
	}
	return loc, nil
}

// planRow is one plan, as ls and show print it.
type planRow struct {
	workflows.PlanStatus
	// State is running, ready, not-ready or failed (the plan could not start).
	State string `json:"state"`
	// Error is why a plan failed or was not ready at its end.
	Error string `json:"error,omitempty"`
}

func (a *App) planLs() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls [--json]",
		Short: "List the plans: their image, regions, deadline and how many regions are ready",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rows, err := c.plans(ctx, "")
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(rows)
			}
			return writePlans(a.Stdout, rows, a.now())
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *App) planShow() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show NAME [--json]",
		Short: "Show a plan and where each of its regions stands",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rows, err := c.plans(ctx, args[0])
			if err != nil {
				return err
			}
			if len(rows) == 0 {
				return fmt.Errorf("no plan %s ('tms plan ls' lists them)", args[0])
			}
			if asJSON {
				return a.printJSON(rows[0])
			}
			return writePlan(a.Stdout, rows[0], a.now())
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *App) planRm() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a plan: a running one stops (its shares are canceled, its regions no longer keep the image for it)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			name := args[0]
			id := workflows.PlanWorkflowID(name)
			d, err := c.DescribeWorkflowExecution(ctx, id, "")
			var nf *serviceerror.NotFound
			if errors.As(err, &nf) {
				return fmt.Errorf("no plan %s ('tms plan ls' lists them)", name)
			}
			if err != nil {
				return fmt.Errorf("cannot read plan %s: %w", name, err)
			}
			info := d.GetWorkflowExecutionInfo()
			if info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				if err := c.CancelWorkflow(ctx, id, ""); err != nil {
					return fmt.Errorf("cannot stop plan %s: %w", name, err)
				}
				// It cancels its shares and releases its holds before it ends.
				wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				defer cancel()
				_ = c.GetWorkflow(wctx, id, "").Get(wctx, nil)
				if wctx.Err() != nil {
					return fmt.Errorf("plan %s was asked to stop and has not yet: run 'tms plan rm %s' again later", name, name)
				}
			}
			if err := c.deleteRun(ctx, info.GetExecution()); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "plan %s removed\n", name)
			return nil
		},
	}
}

// maxPlansListed bounds what plan ls reads.
const maxPlansListed = 500

// plans reads the plans, newest first: the one named (from Temporal's record of its workflow,
// not the visibility store, which lags) or, without a name, every plan visibility lists.
func (c *tclient) plans(ctx context.Context, name string) ([]planRow, error) {
	var execs []*workflowpb.WorkflowExecutionInfo
	if name != "" {
		d, err := c.DescribeWorkflowExecution(ctx, workflows.PlanWorkflowID(name), "")
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read plan %s: %w", name, err)
		}
		execs = append(execs, d.GetWorkflowExecutionInfo())
	} else {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: c.cfg.Namespace,
			Query: "WorkflowType = '" + workflows.NamePlanImage + "'", PageSize: maxPlansListed})
		if err != nil {
			return nil, fmt.Errorf("cannot list the plans: %w", err)
		}
		execs = resp.Executions
	}
	rows := []planRow{}
	seen := map[string]bool{}
	for _, e := range execs {
		id := e.GetExecution().GetWorkflowId()
		if seen[id] { // a name used again: the newest run only
			continue
		}
		seen[id] = true
		if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED {
			continue // removed (plan rm cancels, then deletes in the background)
		}
		if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
			continue // a long plan's earlier run: its current run is listed too
		}
		row, err := c.plan(ctx, e)
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			continue // removed since visibility listed it
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// plan reads one plan's status: a running plan's progress (a query), an ended one's result.
func (c *tclient) plan(ctx context.Context, e *workflowpb.WorkflowExecutionInfo) (planRow, error) {
	id, run := e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()
	row := planRow{State: "running"}
	row.Name = strings.TrimPrefix(id, "plan/")
	if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		v, err := c.QueryWorkflow(ctx, id, run, workflows.QueryProgress)
		if err == nil {
			err = v.Get(&row.PlanStatus)
		}
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			return row, err
		}
		if err != nil {
			row.Error = "cannot ask it: " + err.Error()
		}
		if !row.Checked.IsZero() && len(row.NotReady()) > 0 {
			row.State = "not-ready"
		}
		return row, nil
	}
	err := c.GetWorkflow(ctx, id, run).Get(ctx, &row.PlanStatus)
	var ae *temporal.ApplicationError
	var nf *serviceerror.NotFound
	switch {
	case err == nil:
		row.State = "ready"
	case errors.As(err, &nf):
		return row, err
	case errors.As(err, &ae) && ae.Type() == string(activities.ErrNotReady):
		row.State, row.Error = "not-ready", ae.Message()
		_ = ae.Details(&row.PlanStatus)
	default:
		row.State, row.Error = "failed", rootMessage(err)
	}
	return row, nil
}

func writePlans(w io.Writer, rows []planRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAN\tIMAGE\tVERSION\tREGIONS\tREADY\tBY\tWINDOW\tRATE\tSTATE")
	for _, r := range rows {
		ready := len(r.Regions) - len(r.NotReady())
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", r.Name, dash(r.Image), dash(short(r.Version)), len(r.Regions), ready,
			byText(r.By, now), dash(r.Window), rateText(r.Rate), r.State)
	}
	return tw.Flush()
}

func writePlan(w io.Writer, r planRow, now time.Time) error {
	fmt.Fprintf(w, "plan %s: %s", r.Name, r.State)
	if r.Origin != "" {
		fmt.Fprintf(w, " (made for %s)", r.Origin)
	}
	fmt.Fprintf(w, "\nimage %s (version %s), by %s, window %s, rate %s\n", dash(r.Image), dash(short(r.Version)), byText(r.By, now), dash(r.Window), rateText(r.Rate))
	if !r.Checked.IsZero() {
		fmt.Fprintf(w, "readiness checked %s: %d of %d ready\n", r.Checked.Local().Format(time.DateTime), len(r.Regions)-len(r.NotReady()), len(r.Regions))
	}
	if r.Error != "" {
		fmt.Fprintln(w, r.Error)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tSTATE\tATTEMPTS\tSHARE\tDETAIL")
	for _, g := range r.Regions {
		st := string(g.State)
		if r.Late(g) {
			st += " (NOT READY at the check)"
		}
		if g.State == workflows.PlanReady && !g.Ready.IsZero() {
			st += " since " + g.Ready.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", g.Region, st, g.Attempts, dash(g.Share), dash(g.Detail))
	}
	return tw.Flush()
}

func byText(by, now time.Time) string {
	if by.IsZero() {
		return "-"
	}
	s := by.Local().Format("2006-01-02 15:04")
	if d := by.Sub(now); d > 0 {
		s += " (in " + roundDuration(d.Round(time.Minute)) + ")"
	}
	return s
}

func rateText(r int64) string {
	if r <= 0 {
		return "-"
	}
	return settings.FormatRate(r)
}

// plansNotReady are the lines `tms status` adds for plans with regions not ready at their check.
func plansNotReady(plans []workflows.PlanStatus) []string {
	var out []string
	for _, p := range plans {
		if p.Checked.IsZero() || len(p.NotReady()) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("plan %s: %s not ready in %s (by %s)", p.Name, p.Image, strings.Join(p.NotReady(), ", "), p.By.Local().Format("2006-01-02 15:04")))
	}
	return out
}
