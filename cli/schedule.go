package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tms/workflows"
)

// Schedules are Temporal Schedules whose action starts a task: `tms schedule create NAME --at
// TIME deploy --region R --group G IMAGE` reads the task's command line exactly as `tms deploy`
// would (a fresh App whose plan hook receives the taskRequest), and the schedule starts that
// workflow, with that input and those tags, at each firing.

// scheduleCatchup is how late a firing may still run: one missed while Temporal was down for
// a restart runs when it is back, one missed for longer is dropped and counted (schedule show:
// "missed"), so a 07:00 restore never starts at 10:30 in the middle of a class.
const scheduleCatchup = 10 * time.Minute

// memoKey holds a schedule's scheduleMemo, and the schedule's name on each task it starts.
const (
	memoKey         = workflows.ScheduleMemoKey
	memoKeySchedule = "schedule"
)

// scheduleMemo is what tms records with a schedule, for ls and show (and central's planner).
type scheduleMemo = workflows.ScheduleMemo

// firing is one task a schedule started.
type firing struct {
	Scheduled time.Time `json:"scheduled"`
	Started   time.Time `json:"started"`
	Task      string    `json:"task"`
	Status    string    `json:"status"`
	Failure   string    `json:"failure,omitempty"`
}

// scheduleRow is one line of `tms schedule ls`.
type scheduleRow struct {
	Name string `json:"name"`
	scheduleMemo
	Next   *time.Time `json:"next,omitempty"`
	Paused bool       `json:"paused"`
	// Done: an --at schedule that has fired (Temporal removes it a week after).
	Done bool    `json:"done"`
	Note string  `json:"note,omitempty"`
	Last *firing `json:"last_firing,omitempty"`
}

// scheduleDetail is `tms schedule show`.
type scheduleDetail struct {
	scheduleRow
	Firings []firing `json:"firings"` // the most recent, oldest first
	// Fired counts the tasks started; Skipped the firings skipped because the previous task
	// was still running; Missed those dropped because Temporal was down longer than the
	// catch-up window.
	Fired   int `json:"fired"`
	Skipped int `json:"skipped"`
	Missed  int `json:"missed"`
	// Remaining is how many firings are left (an --at schedule: 1, then 0); nil: no limit.
	Remaining     *int        `json:"remaining,omitempty"`
	Running       []string    `json:"running"`
	NextFirings   []time.Time `json:"next_firings"`
	CatchupWindow string      `json:"catchup_window"`
	Created       time.Time   `json:"created"`
}

var errNotTask = errors.New("not a task command")

// scheduleName is the form of a schedule's name (and Temporal schedule id).
var scheduleName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (a *App) scheduleCommand() *cobra.Command {
	c := &cobra.Command{Use: "schedule", Short: "Run tasks at set times: restore a room every weekday at 07:00, switch it off at 18:00"}
	c.AddCommand(a.scheduleCreate(), a.scheduleLs(), a.scheduleShow(), a.scheduleState("pause"), a.scheduleState("resume"),
		a.scheduleTrigger(), a.scheduleRm())
	return c
}

func (a *App) scheduleCreate() *cobra.Command {
	var at, cron, zone string
	c := &cobra.Command{
		Use:   "create NAME (--at TIME | --cron EXPR) [--timezone TZ] TASK...",
		Short: "Schedule a task command (deploy, image capture, image share, update, power ...) once or repeatedly",
		Long: `Create schedules TASK, a task command line without "tms", like
  tms schedule create lab-morning --cron "0 7 * * mon-fri" deploy --region room3 --group lab exam
  tms schedule create room3-off --cron "0 18 * * *" power off --region room3 --group lab
  tms schedule create tomorrow --at "2026-12-03 07:00" image share exam --to room3
--at fires once: HH:MM (today), YYYY-MM-DD HH:MM or RFC 3339. --cron fires repeatedly: five
fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly,
@yearly. Times are in the region's time zone (region.timezone; 'tms region ls' shows it)
unless --timezone names another. A firing that finds the previous task still running is
skipped and counted; one missed while Temporal was down for more than 10 minutes is dropped
and counted, never run late.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// TASK's flags are TASK's: the command's flags stop at NAME (SetInterspersed(false)),
			// and the flags between NAME and TASK are read here.
			fs := pflag.NewFlagSet("create", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.SetInterspersed(false)
			fs.AddFlagSet(cmd.LocalNonPersistentFlags())
			fs.AddFlagSet(cmd.InheritedFlags())
			if err := fs.Parse(args[1:]); err != nil {
				return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
			}
			name, task := args[0], fs.Args()
			switch {
			case !scheduleName.MatchString(name):
				return usageError{fmt.Errorf("schedule name %q: use lowercase letters, digits, '.', '_' and '-', at most 63, starting with a letter or digit", name)}
			case (at == "") == (cron == ""):
				return usageError{fmt.Errorf("%s: give --at TIME or --cron EXPR", cmd.CommandPath())}
			case len(task) == 0:
				return usageError{fmt.Errorf("%s: TASK is missing: a task command without 'tms', like deploy --region R --group G IMAGE", cmd.CommandPath())}
			}
			if cron != "" {
				if err := checkCron(cron); err != nil {
					return usageError{err}
				}
			}
			req, err := a.planTask(cmd.Context(), task)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			tc, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			region, err := tc.regionInfo(ctx, req.Region)
			if err != nil {
				return err
			}
			loc, err := regionZone(region, zone)
			if err != nil {
				return err
			}
			memo := scheduleMemo{Kind: req.Tags.Kind, Region: req.Region, Target: targetOf(req), Image: req.Tags.Image,
				What: req.What, Command: task, Timezone: loc.String()}
			spec := client.ScheduleSpec{TimeZoneName: loc.String()}
			opts := client.ScheduleOptions{ID: name, Spec: spec, CatchupWindow: scheduleCatchup}
			if at != "" {
				t, err := a.parseAt(at, loc)
				if err != nil {
					return usageError{err}
				}
				one := func(v int) []client.ScheduleRange { return []client.ScheduleRange{{Start: v}} }
				opts.Spec.Calendars = []client.ScheduleCalendarSpec{{Year: one(t.Year()), Month: one(int(t.Month())), DayOfMonth: one(t.Day()),
					Hour: one(t.Hour()), Minute: one(t.Minute()), Second: one(t.Second()), DayOfWeek: []client.ScheduleRange{{Start: 0, End: 6}}}}
				opts.RemainingActions = 1
				memo.Spec = "at " + t.Format("2006-01-02 15:04:05")
			} else {
				opts.Spec.CronExpressions = []string{cron}
				memo.Spec = "cron " + cron
			}
			opts.Memo = map[string]any{memoKey: memo}
			// Its firings are started by the schedule, whoever made it.
			req.Tags.StartedBy = "schedule:" + name
			opts.Action = &client.ScheduleWorkflowAction{
				// Temporal appends the firing's time to the id: each firing is a task of its own.
				ID: req.readable, Workflow: req.Workflow, Args: []any{req.Input}, TaskQueue: req.Queue,
				TypedSearchAttributes: req.Tags.StartAttributes(),
				Memo:                  map[string]any{memoKeySchedule: name},
			}
			if _, err := tc.ScheduleClient().Create(ctx, opts); err != nil {
				if errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
					return fmt.Errorf("schedule %s exists already: 'tms schedule show %s' shows it, 'tms schedule rm %s' removes it", name, name, name)
				}
				return fmt.Errorf("cannot create schedule %s: %w", name, err)
			}
			d, err := tc.describeSchedule(ctx, name, false)
			if err != nil {
				return err
			}
			if at != "" && d.Next == nil && d.Fired == 0 {
				// TIME passed while the schedule was being created: it would never fire.
				if err := tc.ScheduleClient().GetHandle(ctx, name).Delete(ctx); err != nil {
					return fmt.Errorf("--at %s passed while schedule %s was being created, and removing it failed: %w", at, name, err)
				}
				return fmt.Errorf("--at %s passed while schedule %s was being created; nothing is scheduled", at, name)
			}
			next := "no further firing"
			if d.Next != nil {
				next = "next firing " + d.Next.In(loc).Format("2006-01-02 15:04:05") + " " + loc.String()
			}
			fmt.Fprintf(a.Stdout, "created schedule %s: %s, %s; %s\n", name, req.What, memo.Spec+" "+loc.String(), next)
			return nil
		},
	}
	c.Flags().SetInterspersed(false)
	c.Flags().StringVar(&at, "at", "", "fire once at TIME: HH:MM (today), YYYY-MM-DD HH:MM or RFC 3339")
	c.Flags().StringVar(&cron, "cron", "", `fire at each time of a 5-field cron expression ("0 7 * * mon-fri") or @daily, @hourly, ...`)
	c.Flags().StringVar(&zone, "timezone", "", "IANA zone of --at and --cron (default: the region's, region.timezone)")
	return c
}

// planTask reads a task command line (without "tms") with a fresh App whose plan hook takes
// the task instead of starting it. Only task commands may be scheduled: anything else is
// refused before it runs.
func (a *App) planTask(ctx context.Context, task []string) (*plannedTask, error) {
	var got *taskRequest
	var out strings.Builder
	// One instant for the whole reading, so the stamp the task command adds is the one
	// taken off below.
	now := a.now()
	p := &App{Stdout: &out, Stderr: &out, Env: a.Env, Now: func() time.Time { return now }, Progress: a.Progress}
	p.plan = func(req taskRequest) error {
		got = &req
		return nil
	}
	root := p.Command()
	target, _, err := root.Find(task)
	line := strings.Join(task, " ")
	if err != nil || target == root {
		return nil, usageError{fmt.Errorf("TASK %q is not a tms command: schedule a task command, like deploy --region R --group G IMAGE", line)}
	}
	if !isTaskCommand(target) {
		return nil, usageError{fmt.Errorf("%q is not a task command (%s): a schedule runs %s", line, strings.TrimPrefix(target.CommandPath(), "tms "), strings.Join(taskCommands, ", "))}
	}
	root.SetArgs(task)
	root.SetOut(&out)
	root.SetErr(&out)
	if err := root.ExecuteContext(ctx); err != nil {
		if errors.Is(err, errNotTask) {
			return nil, usageError{fmt.Errorf("%q does not start a task on its own, so it cannot be scheduled", line)}
		}
		var ue usageError
		if errors.As(err, &ue) {
			return nil, usageError{fmt.Errorf("TASK %q: %w", line, ue.error)}
		}
		return nil, fmt.Errorf("TASK %q: %w", line, err)
	}
	if got == nil {
		return nil, usageError{fmt.Errorf("TASK %q asked for no task (%s)", line, strings.TrimSpace(out.String()))}
	}
	// The task's readable id without the run stamp the task command added: Temporal appends
	// each firing's time instead.
	readable := strings.TrimSuffix(got.ID, workflows.Stamped("", now))
	return &plannedTask{taskRequest: *got, readable: readable}, nil
}

// plannedTask is a task a schedule runs: the request and its id before stamping.
type plannedTask struct {
	taskRequest
	readable string
}

// taskCommands are the commands a schedule may run (the task commands); a command that
// hands its task to runTask may also mark itself with the "tms.task" annotation.
var taskCommands = []string{"deploy", "image capture", "image share", "update", "power on", "power off", "power reboot"}

const taskAnnotation = "tms.task"

func isTaskCommand(c *cobra.Command) bool {
	return c.Annotations[taskAnnotation] != "" || slices.Contains(taskCommands, strings.TrimPrefix(c.CommandPath(), "tms "))
}

// targetOf is the group or the terminals a task works on.
func targetOf(req *plannedTask) string {
	if req.Tags.Group != "" {
		return "group " + req.Tags.Group
	}
	if len(req.Tags.Terminals) > 0 {
		return strings.Join(req.Tags.Terminals, ",")
	}
	return ""
}

// noSchedule turns Temporal's "not found" for schedule name into words; other errors pass.
func noSchedule(err error, name string) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return fmt.Errorf("no schedule %s ('tms schedule ls' lists them): %w", name, err)
	}
	return err
}
