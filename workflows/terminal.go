package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/agentwire"
	"tms/state"
)

// AgentTimeouts bound how long a workflow waits for a terminal's agent.
type AgentTimeouts struct {
	// Silence is the longest a terminal may go without a report, its boot included
	// (default 10 minutes).
	Silence time.Duration
	// Tries is how many silences in a row are borne before the task fails (default 3): a
	// restarted agent carries on within them.
	Tries int
	// Total bounds the whole task (default 12 hours).
	Total time.Duration
}

func (t AgentTimeouts) withDefaults() AgentTimeouts {
	if t.Silence <= 0 {
		t.Silence = 10 * time.Minute
	}
	if t.Tries <= 0 {
		t.Tries = 3
	}
	if t.Total <= 0 {
		t.Total = 12 * time.Hour
	}
	return t
}

// TerminalProgress is how far one terminal's task got, for progress queries.
type TerminalProgress struct {
	// Name is the terminal as people know it: its name, else its MAC (a capture: as its input
	// named it).
	Name  string `json:"Terminal"`
	Phase Phase  // PhasePreparing, PhaseRebooting, PhaseWaiting, PhaseFinishing, PhaseDone, PhaseFailed
	Error string `json:",omitempty"`
}

// regionOptions are the options of a region's short bookkeeping activities.
func regionOptions(ctx workflow.Context, region string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              activities.RegionQueue(region),
		ScheduleToStartTimeout: 10 * time.Minute, // the region's worker is down
		StartToCloseTimeout:    time.Minute,
		RetryPolicy:            regionRetry(),
	})
}

// regionRetry is how a region's short bookkeeping activities are retried: bad input and the
// inventory's refusals are final.
func regionRetry() *temporal.RetryPolicy {
	return &temporal.RetryPolicy{
		MaximumAttempts:        10,
		NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput, activities.ErrBadImage, activities.ErrBadVersion, activities.ErrUnknownTerminal, activities.ErrNotEnrolled, activities.ErrNotHere, activities.ErrDoesNotFit, activities.ErrConflict),
	}
}

// centralOptions are the options of central's catalog activities.
func centralOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           activities.CentralQueue,
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 10},
	})
}

// agentTask runs one terminal's capture, deploy or update: set its boot action, reboot it, wait
// for its agent, and, however that ends, put its boot action back to its own disk. The task's id is the
// calling workflow's id and run id: a retried activity resumes this run's task, and a new run of
// the same workflow id (the same deploy again tomorrow) is a new task that starts from the disk
// as it is then, never the outcome of an earlier run.
func agentTask(ctx workflow.Context, region string, in activities.TaskInput, to AgentTimeouts, prog *TerminalProgress) (activities.TerminalRef, activities.AgentResult, error) {
	var r *activities.Region
	var ref activities.TerminalRef
	var res activities.AgentResult
	to = to.withDefaults()
	step := terminalSteps(ctx, region)
	local := step.options(ctx)
	task := TaskID(workflow.GetInfo(ctx).WorkflowExecution)

	prog.Phase = PhasePreparing
	in.Task, in.Expires = task, workflow.Now(ctx).Add(to.Total)
	if err := workflow.ExecuteActivity(regionOptions(ctx, region), r.PrepareTask, in).Get(ctx, &ref); err != nil {
		prog.Phase, prog.Error = PhaseFailed, rootCause(err)
		return ref, res, err
	}

	prog.Phase = PhaseRebooting
	err := step.run(local, r.PowerTerminal, activities.PowerInput{MAC: ref.MAC, Command: agentwire.CommandReboot}).Get(ctx, nil)
	if err == nil {
		prog.Phase = PhaseWaiting
		wait := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:              activities.RegionQueue(region),
			ScheduleToStartTimeout: 10 * time.Minute,
			StartToCloseTimeout:    to.Total,
			HeartbeatTimeout:       to.Silence,
			RetryPolicy: &temporal.RetryPolicy{
				InitialInterval:        time.Second,
				MaximumAttempts:        int32(to.Tries),
				NonRetryableErrorTypes: activities.NonRetryable(activities.ErrAgentFailed, activities.ErrUnknownTask),
			},
		})
		err = workflow.ExecuteActivity(wait, r.WaitForAgent, activities.WaitInput{Task: task}).Get(ctx, &res)
		if isTimeout(err) {
			err = activities.ErrTerminalSilent.New(fmt.Sprintf(
				"terminal %s did not report for %s, %d times: is it on, and does it boot from the network?", name(ref), to.Silence, to.Tries), err)
		}
	}

	// Whatever happened, the terminal must not boot into this task again.
	finish := activities.FinishInput{Task: task, MAC: ref.MAC, State: state.TaskDone, Version: res.Version}
	fctx := local
	switch {
	case err == nil:
	case ctx.Err() != nil:
		finish.State, finish.Error = state.TaskCanceled, "canceled"
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		fctx = step.options(dctx)
	default:
		finish.State, finish.Error = state.TaskFailed, rootCause(err)
	}
	prog.Phase = PhaseFinishing
	if ferr := step.run(fctx, r.FinishTask, finish).Get(fctx, nil); ferr != nil && err == nil {
		err = ferr
	}
	if err != nil {
		prog.Phase, prog.Error = PhaseFailed, rootCause(err)
		return ref, res, err
	}
	prog.Phase = PhaseDone
	return ref, res, nil
}

// steps runs two of a terminal task's short steps on the region: PowerTerminal and FinishTask,
// one command to a PC and one write to the region's inventory.
//
// A workflow on the region's own task queue runs them as local activities, in the worker that
// runs its workflow task (a server of that region, as a remote activity would be): each is one
// marker in the history, with no activity task for Temporal to dispatch and no workflow task
// to take its result, which is what bounds a district deploying to thousands of PCs at once
// (docs/performance.md, "District scale"). PrepareTask stays a remote activity: the region's
// worker runs a deploy's PrepareTasks side by side, so its terminals' tasks are all set up
// within moments. It was local once, when a terminal that asked for its task counted its
// classmates' tasks to decide whether to swarm: set up one by one inside each terminal's
// workflow task, the first terminals, polling already, took their tasks before the others were
// set up and wrote alone (the classroom test: 2.26 times the image from the region instead of
// 1.34). Each task now says how many terminals write at once (TaskInput.Writers,
// agentapi.swarmFor); a local PrepareTask has not been measured since.
//
// A workflow on central's queue (a bootenv rollout's canary) cannot run the region's
// activities itself and keeps remote ones on the region's queue, as does a workflow recorded
// before this version (GetVersion "terminal-power-finish-local").
type steps struct {
	region string
	local  bool
}

func terminalSteps(ctx workflow.Context, region string) steps {
	onRegion := workflow.GetInfo(ctx).TaskQueueName == activities.RegionQueue(region)
	return steps{region: region, local: onRegion && workflow.GetVersion(ctx, "terminal-power-finish-local", workflow.DefaultVersion, 1) == 1}
}

// options are the steps' options: as regionOptions, for a local or a remote activity.
func (s steps) options(ctx workflow.Context) workflow.Context {
	if !s.local {
		return regionOptions(ctx, s.region)
	}
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		// As a remote step's 10 minutes to be taken and one minute to run.
		ScheduleToCloseTimeout: 11 * time.Minute,
		StartToCloseTimeout:    time.Minute,
		RetryPolicy:            regionRetry(),
	})
}

func (s steps) run(ctx workflow.Context, activity, arg any) workflow.Future {
	if s.local {
		return workflow.ExecuteLocalActivity(ctx, activity, arg)
	}
	return workflow.ExecuteActivity(ctx, activity, arg)
}

// TaskID names the terminal task of one run of a terminal workflow: WORKFLOW-ID@RUN-ID.
func TaskID(run workflow.Execution) string { return run.ID + "@" + run.RunID }

// SplitTaskID returns the workflow id and run id a terminal task's id names (the run is empty
// for a task recorded before tasks were per run).
func SplitTaskID(task string) (workflowID, runID string) {
	i := strings.LastIndexByte(task, '@')
	if i < 0 {
		return task, ""
	}
	return task[:i], task[i+1:]
}

func name(t activities.TerminalRef) string {
	if t.Name != "" {
		return t.Name
	}
	return t.MAC
}

func isTimeout(err error) bool {
	var te *temporal.TimeoutError
	return errors.As(err, &te)
}
