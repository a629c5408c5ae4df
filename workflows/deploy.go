package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/agentwire"
)

// DeployImageInput asks for an image to be written to the disks of a group or of terminals.
type DeployImageInput struct {
	Region    string
	Group     string
	Terminals []string // names or MACs, when no group is given
	Image     string   // NAME, NAME:TAG or NAME@VERSION
	// Concurrency is how many terminals are deployed at once (default: all of them, as their
	// agents fetch chunks from each other; 10 for a deploy started before tms had the swarm).
	Concurrency int
	Timeouts    AgentTimeouts
	// StartAt is when the deploy starts; zero: at once. Until then "modify" may change it,
	// the targets and the image.
	StartAt time.Time
}

// TerminalOutcome is how one terminal's deploy ended.
type TerminalOutcome struct {
	// Name is the terminal's name for people (its MAC if it has none).
	Name         string `json:"Terminal"`
	MAC          string
	OK           bool
	Error        string `json:",omitempty"`
	Written      int64
	WrittenBytes int64
	Skipped      int64
}

// DeployImageResult says how every terminal's deploy ended.
type DeployImageResult struct {
	Version   string
	Share     ShareImageResult
	Terminals []TerminalOutcome
	Failed    int
}

// DeployProgress is what DeployImage's "progress" query returns.
type DeployProgress struct {
	Phase     Phase  // PhaseResolving, PhaseSharing, PhaseDeploying, PhaseDone
	Version   string `json:",omitempty"`
	Terminals []TerminalProgress
}

// DeployWorkflowID is the readable id of the workflow deploying image to a group or terminals.
func DeployWorkflowID(region, group string, terminals []string, image string) string {
	return "deploy/" + region + "/" + Target(group, terminals) + "/" + image
}

// DeployImage writes an image to terminals' disks: the image is made local to the region first
// (a child ShareImage on central's queue), then each terminal is deployed by its own child
// DeployTerminal workflow, at most Concurrency at once. A terminal that fails is reported and
// the others go on; the workflow fails only if every terminal failed. It runs on the region's
// task queue.
func DeployImage(ctx workflow.Context, in DeployImageInput) (DeployImageResult, error) {
	var res DeployImageResult
	prog := &DeployProgress{Phase: PhaseResolving}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (DeployProgress, error) { return *prog, nil }); err != nil {
		return res, err
	}
	if !in.StartAt.IsZero() {
		prog.Phase = PhaseScheduled
	}
	if err := awaitStart(ctx, startFields{At: &in.StartAt, Group: &in.Group, Terminals: &in.Terminals, Image: &in.Image}, func() TaskTags {
		return TaskTags{Region: in.Region, Kind: TaskDeploy, Group: in.Group, Terminals: in.Terminals, Image: in.Image, StartAt: in.StartAt}
	}); err != nil {
		return res, err
	}
	prog.Phase = PhaseResolving
	terms, err := resolveTargets(ctx, TaskTags{Region: in.Region, Kind: TaskDeploy, Group: in.Group, Terminals: in.Terminals, Image: in.Image})
	if err != nil {
		return res, err
	}
	for _, t := range terms {
		prog.Terminals = append(prog.Terminals, TerminalProgress{Name: name(t), Phase: PhaseQueued})
	}

	prog.Phase = PhaseSharing
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	// The terminals start as soon as the region has the version's manifest, while the share
	// still brings its chunks (startShare). Before this version, they started once the whole
	// image was here.
	share, whole, termCtx, err := shareForTerminals(ctx, "deploy-while-arriving", in.Region, in.Image)
	res.Share = whole
	if err != nil {
		return res, err
	}
	res.Version = whole.Version
	if share != nil {
		res.Version = share.Version
	}
	prog.Version = res.Version

	prog.Phase = PhaseDeploying
	limit := defaultConcurrency(ctx, in.Concurrency, len(terms))
	res.Terminals = make([]TerminalOutcome, len(terms))
	running, finished := 0, 0
	// A canceled deploy waits for its terminals' tasks to end their cancellation (each sets
	// its terminal back to its own disk and records the task as canceled). Before this version,
	// the deploy ended at once and its children were terminated half-way, leaving their
	// terminals' boot actions set to the deploy.
	cleanCancel := workflow.GetVersion(ctx, "deploy-cancel-waits-for-terminals", workflow.DefaultVersion, 1) == 1
	canceled := func(err error) (DeployImageResult, error) {
		if cleanCancel {
			dctx, _ := workflow.NewDisconnectedContext(ctx)
			_ = workflow.Await(dctx, func() bool { return running == 0 })
		}
		if share != nil && share.Failed() {
			// The share failed: the terminals were canceled for it, and its reason is the deploy's.
			prog.Phase = PhaseFailed
			return res, share.err
		}
		return res, err
	}
	for i, t := range terms {
		if err := workflow.Await(termCtx, func() bool { return running < limit }); err != nil {
			return canceled(err)
		}
		running++
		prog.Terminals[i].Phase = PhaseDeploying
		child := workflow.WithChildOptions(termCtx, workflow.ChildWorkflowOptions{
			WorkflowID:          id + "/" + name(t),
			TaskQueue:           activities.RegionQueue(in.Region),
			WaitForCancellation: cleanCancel,
		})
		f := workflow.ExecuteChildWorkflow(child, DeployTerminal, DeployTerminalInput{
			Region: in.Region, TerminalRef: t.MAC, Name: t.Name, Version: res.Version, Timeouts: in.Timeouts, Writers: min(limit, len(terms))})
		workflow.Go(ctx, func(gctx workflow.Context) {
			out := TerminalOutcome{Name: name(t), MAC: t.MAC}
			if err := f.Get(gctx, &out); err != nil {
				out = TerminalOutcome{Name: name(t), MAC: t.MAC, Error: rootCause(err)}
				prog.Terminals[i].Phase, prog.Terminals[i].Error = PhaseFailed, out.Error
			} else {
				prog.Terminals[i].Phase = PhaseDone
			}
			res.Terminals[i] = out
			running--
			finished++
		})
	}
	if err := workflow.Await(termCtx, func() bool { return finished == len(terms) }); err != nil {
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
		if !o.OK {
			res.Failed++
			if first == "" {
				first = o.Name + ": " + o.Error
			}
		}
	}
	prog.Phase = PhaseDone
	if res.Failed == len(res.Terminals) {
		return res, activities.ErrDeployFailed.New(
			fmt.Sprintf("deploy of %s failed on every terminal (%d); %s", in.Image, res.Failed, first), nil, res)
	}
	return res, nil
}

// DeployTerminalInput asks for one terminal to be deployed with a version the region holds.
type DeployTerminalInput struct {
	Region string
	// TerminalRef names the terminal: its MAC (as DeployImage passes it) or its name.
	TerminalRef string `json:"Terminal"`
	Name        string // for people
	Version     string
	Timeouts    AgentTimeouts
	// Writers is how many terminals the deploy writes at once (its Concurrency, at most its
	// terminals): the region runs a swarm for the version from the first terminal's task on
	// when it is more than one. 0 (a deploy started before it was passed): the region counts
	// the tasks set up so far.
	Writers int `json:",omitempty"`
}

// DeployTerminal deploys one terminal: its next network boot runs the agent in deploy mode,
// the terminal is rebooted, the agent writes the blocks that differ, reads the disk back to
// verify it, and the terminal goes back to booting from its disk.
func DeployTerminal(ctx workflow.Context, in DeployTerminalInput) (TerminalOutcome, error) {
	out := TerminalOutcome{Name: in.Name, MAC: in.TerminalRef}
	if out.Name == "" {
		out.Name = in.TerminalRef
	}
	prog := &TerminalProgress{Name: out.Name, Phase: PhasePreparing}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (TerminalProgress, error) { return *prog, nil }); err != nil {
		return out, err
	}
	ref, res, err := agentTask(ctx, in.Region, activities.TaskInput{TerminalRef: in.TerminalRef, Kind: agentwire.KindDeploy, Version: in.Version, Writers: in.Writers}, in.Timeouts, prog)
	if ref.MAC != "" {
		out.MAC = ref.MAC
	}
	if err != nil {
		out.Error = rootCause(err)
		return out, err
	}
	out.OK, out.Written, out.WrittenBytes, out.Skipped = true, res.Written, res.WrittenBytes, res.Skipped
	return out, nil
}

// defaultConcurrency is how many terminals a deploy or update writes at once: asked, or all of
// them. The terminals of one deploy form a swarm (docs/swarm.md), so a classroom written at once
// takes about the time of one PC, where waves of 10 took a multiple of it. A workflow recorded
// before this (GetVersion "write-all-at-once") keeps its waves of 10.
func defaultConcurrency(ctx workflow.Context, asked, terminals int) int {
	if asked > 0 {
		return asked
	}
	if workflow.GetVersion(ctx, "write-all-at-once", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return 10
	}
	return max(terminals, 1)
}
