package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/agentwire"
)

// UpdateImageInput asks for the disks of a group or of terminals to be brought to an image's
// version, each by the least work its recorded version allows.
type UpdateImageInput struct {
	Region    string
	Group     string
	Terminals []string // names or MACs, when no group is given
	Image     string   // NAME, NAME:TAG or NAME@VERSION
	// Concurrency is how many terminals are written at once (default: all of them, as for a
	// deploy).
	Concurrency int
	Timeouts    AgentTimeouts
	// StartAt is when the update starts (zero: now); until then "modify" changes it.
	StartAt time.Time `json:",omitempty"`
}

// UpdateOutcome is how one terminal's update ended: the decision and its reason, and for a
// terminal that was written what moved.
type UpdateOutcome struct {
	// Name is the terminal's name for people (its MAC if it has none).
	Name     string `json:"Terminal"`
	MAC      string
	Decision activities.Decision // stop, incremental or full
	Reason   string
	OK       bool
	Error    string `json:",omitempty"`
	// FetchedBytes is the chunk bytes the agent fetched (decompressed), WrittenBytes what it
	// wrote; Written counts the chunks written and Skipped those a full update found right.
	FetchedBytes int64
	WrittenBytes int64
	Written      int64
	Skipped      int64
}

// UpdateImageResult says what an update did to every terminal.
type UpdateImageResult struct {
	Version   string
	Share     ShareImageResult
	Terminals []UpdateOutcome
	// Stopped, Incremental and Full count the decisions; Failed the terminals that failed.
	Stopped, Incremental, Full, Failed int
	// FetchedBytes and WrittenBytes add up the terminals'.
	FetchedBytes, WrittenBytes int64
}

// UpdateTerminalProgress is one terminal's part of an update's progress.
type UpdateTerminalProgress struct {
	TerminalProgress
	Decision activities.Decision `json:",omitempty"`
}

// UpdateProgress is what UpdateImage's "progress" query returns.
type UpdateProgress struct {
	Phase     Phase  // PhaseResolving, PhaseSharing, PhaseDeciding, PhaseUpdating, PhaseDone
	Version   string `json:",omitempty"`
	Terminals []UpdateTerminalProgress
}

// UpdateWorkflowID is the readable id of the workflow updating a group or terminals to image.
func UpdateWorkflowID(region, group string, terminals []string, image string) string {
	return "update/" + region + "/" + Target(group, terminals) + "/" + image
}

// UpdateImage brings terminals' disks to an image's version by the version chain: the image is
// made local to the region (a child ShareImage), DecideUpdate compares each terminal's recorded
// version with the target's chain, and each terminal that needs writing is updated by its own
// child UpdateTerminal, at most Concurrency at once: incrementally (only the chunks that
// changed since the version it holds) or in full (a deploy). A terminal that holds the target
// already is not booted. A terminal that fails is reported and the others go on; the workflow
// fails only if every terminal it had to write failed. It runs on the region's task queue.
func UpdateImage(ctx workflow.Context, in UpdateImageInput) (UpdateImageResult, error) {
	var res UpdateImageResult
	prog := &UpdateProgress{Phase: PhaseResolving}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (UpdateProgress, error) { return *prog, nil }); err != nil {
		return res, err
	}
	if !in.StartAt.IsZero() {
		prog.Phase = PhaseScheduled
	}
	if err := awaitStart(ctx, startFields{At: &in.StartAt, Group: &in.Group, Terminals: &in.Terminals, Image: &in.Image}, func() TaskTags {
		return TaskTags{Region: in.Region, Kind: TaskUpdate, Group: in.Group, Terminals: in.Terminals, Image: in.Image, StartAt: in.StartAt}
	}); err != nil {
		return res, err
	}
	prog.Phase = PhaseResolving
	terms, err := resolveTargets(ctx, TaskTags{Region: in.Region, Kind: TaskUpdate, Group: in.Group, Terminals: in.Terminals, Image: in.Image})
	if err != nil {
		return res, err
	}
	for _, t := range terms {
		prog.Terminals = append(prog.Terminals, UpdateTerminalProgress{TerminalProgress: TerminalProgress{Name: name(t), Phase: PhaseQueued}})
	}

	prog.Phase = PhaseSharing
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	// As a deploy: the terminals start once the region has the version's manifest, while the
	// share goes on (startShare); before this version, once the whole image was here.
	share, whole, termCtx, err := shareForTerminals(ctx, "update-while-arriving", in.Region, in.Image)
	res.Share = whole
	if err != nil {
		return res, err
	}
	res.Version = whole.Version
	if share != nil {
		res.Version = share.Version
	}
	prog.Version = res.Version

	prog.Phase = PhaseDeciding
	var r *activities.Region
	var decided activities.DecideResult
	if err := workflow.ExecuteActivity(regionOptions(termCtx, in.Region), r.DecideUpdate,
		activities.DecideInput{Version: res.Version, Terminals: terms}).Get(termCtx, &decided); err != nil {
		if share != nil && share.Failed() {
			return res, share.err
		}
		return res, err
	}
	if len(decided.Terminals) != len(terms) {
		return res, activities.ErrBadInput.New(fmt.Sprintf("%d decisions for %d terminals", len(decided.Terminals), len(terms)), nil)
	}

	prog.Phase = PhaseUpdating
	limit := defaultConcurrency(ctx, in.Concurrency, len(terms))
	writing := 0 // the terminals the update writes: a swarm's size is at most these
	for _, d := range decided.Terminals {
		if d.Decision != activities.DecisionStop {
			writing++
		}
	}
	res.Terminals = make([]UpdateOutcome, len(terms))
	running, finished, started := 0, 0, 0
	// A canceled update waits for its terminals' tasks to end their cancellation: each sets its
	// terminal back to its own disk and records its task as canceled.
	canceled := func(err error) (UpdateImageResult, error) {
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		_ = workflow.Await(dctx, func() bool { return running == 0 })
		if share != nil && share.Failed() {
			// The share failed: the terminals were canceled for it, and its reason is the update's.
			prog.Phase = PhaseFailed
			return res, share.err
		}
		return res, err
	}
	for i, t := range terms {
		d := decided.Terminals[i]
		prog.Terminals[i].Decision = d.Decision
		if d.Decision == activities.DecisionStop {
			res.Terminals[i] = UpdateOutcome{Name: name(t), MAC: t.MAC, Decision: d.Decision, Reason: d.Reason, OK: true}
			prog.Terminals[i].Phase = PhaseDone
			continue
		}
		if err := workflow.Await(termCtx, func() bool { return running < limit }); err != nil {
			return canceled(err)
		}
		running++
		started++
		prog.Terminals[i].Phase = PhaseUpdating
		child := workflow.WithChildOptions(termCtx, workflow.ChildWorkflowOptions{
			WorkflowID:          id + "/" + name(t),
			TaskQueue:           activities.RegionQueue(in.Region),
			WaitForCancellation: true,
		})
		f := workflow.ExecuteChildWorkflow(child, UpdateTerminal, UpdateTerminalInput{
			Region: in.Region, TerminalRef: t.MAC, Name: t.Name, Version: res.Version,
			Decision: d.Decision, Reason: d.Reason, Base: d.Base, Timeouts: in.Timeouts, Writers: min(limit, writing)})
		workflow.Go(ctx, func(gctx workflow.Context) {
			out := UpdateOutcome{Name: name(t), MAC: t.MAC, Decision: d.Decision, Reason: d.Reason}
			if err := f.Get(gctx, &out); err != nil {
				out = UpdateOutcome{Name: name(t), MAC: t.MAC, Decision: d.Decision, Reason: d.Reason, Error: rootCause(err)}
				prog.Terminals[i].Phase, prog.Terminals[i].Error = PhaseFailed, out.Error
			} else {
				prog.Terminals[i].Phase = PhaseDone
			}
			res.Terminals[i] = out
			running--
			finished++
		})
	}
	if err := workflow.Await(termCtx, func() bool { return finished == started }); err != nil {
		return canceled(err)
	}
	if share != nil {
		if err := share.Wait(ctx); err != nil {
			return canceled(err)
		}
		res.Share = share.res
	}
	var first string
	for _, o := range res.Terminals {
		switch o.Decision {
		case activities.DecisionStop:
			res.Stopped++
		case activities.DecisionIncremental:
			res.Incremental++
		default:
			res.Full++
		}
		res.FetchedBytes += o.FetchedBytes
		res.WrittenBytes += o.WrittenBytes
		if !o.OK {
			res.Failed++
			if first == "" {
				first = o.Name + ": " + o.Error
			}
		}
	}
	prog.Phase = PhaseDone
	if started > 0 && res.Failed == started {
		return res, activities.ErrUpdateFailed.New(
			fmt.Sprintf("update to %s failed on every terminal it had to write (%d); %s", in.Image, res.Failed, first), nil, res)
	}
	return res, nil
}

// UpdateTerminalInput asks for one terminal to be brought to a version the region holds, as
// DecideUpdate decided.
type UpdateTerminalInput struct {
	Region string
	// TerminalRef names the terminal: its MAC (as UpdateImage passes it) or its name.
	TerminalRef string `json:"Terminal"`
	Name        string // for people
	Version     string
	Decision    activities.Decision // incremental or full
	Reason      string
	Base        string // incremental: the version the disk holds
	Timeouts    AgentTimeouts
	// Writers is how many terminals the update writes at once (DeployTerminalInput.Writers).
	Writers int `json:",omitempty"`
}

// UpdateTerminal writes one terminal: an incremental update boots it into an update task (the
// agent fetches, writes and reads back only the chunks that differ from Base); a full one into
// a deploy (every block compared, what differs written, everything read back). Either way the
// terminal boots from its disk again afterwards and, once the agent verified what it wrote, is
// recorded as holding Version.
func UpdateTerminal(ctx workflow.Context, in UpdateTerminalInput) (UpdateOutcome, error) {
	out := UpdateOutcome{Name: in.Name, MAC: in.TerminalRef, Decision: in.Decision, Reason: in.Reason}
	if out.Name == "" {
		out.Name = in.TerminalRef
	}
	prog := &TerminalProgress{Name: out.Name, Phase: PhasePreparing}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (TerminalProgress, error) { return *prog, nil }); err != nil {
		return out, err
	}
	task := activities.TaskInput{TerminalRef: in.TerminalRef, Kind: agentwire.KindDeploy, Version: in.Version, Writers: in.Writers}
	switch in.Decision {
	case activities.DecisionStop:
		out.OK, prog.Phase = true, PhaseDone
		return out, nil
	case activities.DecisionIncremental:
		task.Kind, task.Base = agentwire.KindUpdate, in.Base
	case activities.DecisionFull:
	default:
		return out, activities.ErrBadInput.New(fmt.Sprintf("update decision %q is not stop, incremental or full", in.Decision), nil)
	}
	ref, res, err := agentTask(ctx, in.Region, task, in.Timeouts, prog)
	if ref.MAC != "" {
		out.MAC = ref.MAC
	}
	if err != nil {
		out.Error = rootCause(err)
		return out, err
	}
	out.OK, out.Written, out.WrittenBytes, out.Skipped, out.FetchedBytes = true, res.Written, res.WrittenBytes, res.Skipped, res.FetchedBytes
	return out, nil
}
