package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/agentwire"
)

// Power actions, as `tms power ACTION` names them.
const (
	PowerActionOn     = "on"
	PowerActionOff    = "off"
	PowerActionReboot = "reboot"
)

// PowerTerminalsInput asks for a group or some terminals of a region to be switched on, off or
// rebooted.
type PowerTerminalsInput struct {
	Region    string
	Action    string // PowerActionOn, PowerActionOff or PowerActionReboot
	Group     string
	Terminals []string // names or MACs, when no group is given
	// Timeout bounds each terminal's wait: to be seen after Wake-on-LAN (0: the region's
	// region.boot.wake_timeout), or for its agent to take the command and, for off, stop
	// polling (0: activities.DefaultAnswerTimeout).
	Timeout time.Duration
	// StartAt is when the task starts (zero: now); until then "modify" changes it.
	StartAt time.Time `json:",omitempty"`
}

// PowerTerminalOutcome is how one terminal's power command ended.
type PowerTerminalOutcome struct {
	Name    string `json:"Terminal"`
	MAC     string
	Outcome string // activities.PowerWoke, PowerAlreadyOn, PowerOff, PowerRebooted, PowerNoAnswer, PowerRefused, or PowerFailed
	Reason  string `json:",omitempty"`
	OK      bool
}

// PowerFailed is the outcome of a terminal whose power activity itself failed (the region's
// worker, its database); Reason holds the error.
const PowerFailed = "failed"

// PowerTerminalsResult says how every terminal's power command ended.
type PowerTerminalsResult struct {
	Action    string
	Terminals []PowerTerminalOutcome
	Failed    int
}

// PowerProgress is what PowerTerminals' "progress" query returns: the terminals, each with its
// outcome once known (an empty Outcome: still waiting).
type PowerProgress struct {
	Phase     Phase // PhaseResolving, PhaseWaiting, PhaseDone
	Action    string
	Terminals []PowerTerminalOutcome
}

// PowerWorkflowID is the readable id of a power task: power-on/REGION/TARGET, power-off/...,
// reboot/....
func PowerWorkflowID(action, region, group string, terminals []string) string {
	return PowerKind(action) + "/" + region + "/" + Target(group, terminals)
}

// PowerKind is the task kind of a power action (TaskPowerOn, TaskPowerOff, TaskReboot).
func PowerKind(action string) string {
	switch action {
	case PowerActionOn:
		return TaskPowerOn
	case PowerActionOff:
		return TaskPowerOff
	case PowerActionReboot:
		return TaskReboot
	}
	return "power-" + action
}

// PowerTerminals switches terminals on (Wake-on-LAN from the region until each is seen), off
// or reboots them (through their agents). Each terminal is one activity with heartbeats,
// all at once: a power command is a few packets and a wait, too little for a child workflow
// of its own, and an activity's retry starts the terminal's wait over, which is what a power
// command needs after a worker's crash. One terminal's failure never fails the others; the
// workflow fails only if every terminal failed. It runs on the region's task queue.
func PowerTerminals(ctx workflow.Context, in PowerTerminalsInput) (PowerTerminalsResult, error) {
	res := PowerTerminalsResult{Action: in.Action}
	prog := &PowerProgress{Phase: PhaseResolving, Action: in.Action}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (PowerProgress, error) { return *prog, nil }); err != nil {
		return res, err
	}
	var command agentwire.Command
	switch in.Action {
	case PowerActionOn:
	case PowerActionOff:
		command = agentwire.CommandPoweroff
	case PowerActionReboot:
		command = agentwire.CommandReboot
	default:
		return res, activities.ErrBadInput.New(fmt.Sprintf("power action %q is not on, off or reboot", in.Action), nil)
	}
	if !in.StartAt.IsZero() {
		prog.Phase = PhaseScheduled
	}
	if err := awaitStart(ctx, startFields{At: &in.StartAt, Group: &in.Group, Terminals: &in.Terminals}, func() TaskTags {
		return TaskTags{Region: in.Region, Kind: PowerKind(in.Action), Group: in.Group, Terminals: in.Terminals, StartAt: in.StartAt}
	}); err != nil {
		return res, err
	}
	prog.Phase = PhaseResolving
	terms, err := resolveTargets(ctx, TaskTags{Region: in.Region, Kind: PowerKind(in.Action), Group: in.Group, Terminals: in.Terminals})
	if err != nil {
		return res, err
	}
	for _, t := range terms {
		prog.Terminals = append(prog.Terminals, PowerTerminalOutcome{Name: name(t), MAC: t.MAC})
	}

	prog.Phase = PhaseWaiting
	wait := in.Timeout
	if wait <= 0 {
		// The region's own timeout decides (region.boot.wake_timeout, at most an hour); a lost
		// worker is found by the heartbeat timeout.
		wait = time.Hour
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              activities.RegionQueue(in.Region),
		ScheduleToStartTimeout: 10 * time.Minute,
		StartToCloseTimeout:    wait + time.Minute,
		HeartbeatTimeout:       30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			MaximumAttempts:        3,
			NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput, activities.ErrUnknownTerminal, activities.ErrNotEnrolled),
		},
	})
	var r *activities.Region
	res.Terminals = make([]PowerTerminalOutcome, len(terms))
	finished := 0
	for i, t := range terms {
		var f workflow.Future
		if command == "" {
			f = workflow.ExecuteActivity(actx, r.PowerOn, activities.PowerOnInput{MAC: t.MAC, Timeout: in.Timeout})
		} else {
			f = workflow.ExecuteActivity(actx, r.PowerCommand, activities.PowerCommandInput{MAC: t.MAC, Command: command, Timeout: in.Timeout})
		}
		workflow.Go(ctx, func(gctx workflow.Context) {
			out := PowerTerminalOutcome{Name: name(t), MAC: t.MAC}
			var o activities.PowerOutcome
			if err := f.Get(gctx, &o); err != nil {
				out.Outcome, out.Reason = PowerFailed, rootCause(err)
			} else {
				out.Outcome, out.Reason, out.OK = o.Outcome, o.Reason, activities.PowerOK(o.Outcome)
			}
			res.Terminals[i], prog.Terminals[i] = out, out
			finished++
		})
	}
	if err := workflow.Await(ctx, func() bool { return finished == len(terms) }); err != nil {
		return res, err
	}
	var first string
	for _, o := range res.Terminals {
		if !o.OK {
			res.Failed++
			if first == "" {
				first = o.Name + ": " + o.Outcome
				if o.Reason != "" {
					first += ": " + o.Reason
				}
			}
		}
	}
	prog.Phase = PhaseDone
	if res.Failed == len(res.Terminals) {
		return res, activities.ErrPowerFailed.New(
			fmt.Sprintf("power %s failed on every terminal (%d); %s", in.Action, res.Failed, first), nil, res)
	}
	return res, nil
}
