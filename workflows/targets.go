package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/manifest"
)

// resolveTargets turns a task's group or terminals into terminals (ResolveTerminals on the
// region's queue) and tags the task with their names, so that `tms task ls --terminal T` finds a
// group task by its members. Deploys, updates and power tasks start with it; tags are the
// task's, its StartAt left zero (the tags recorded histories carry).
func resolveTargets(ctx workflow.Context, tags TaskTags) ([]activities.TerminalRef, error) {
	var r *activities.Region
	var res activities.ResolveResult
	if err := workflow.ExecuteActivity(regionOptions(ctx, tags.Region), r.ResolveTerminals,
		activities.ResolveInput{Group: tags.Group, Terminals: tags.Terminals}).Get(ctx, &res); err != nil {
		return nil, err
	}
	tags.Terminals = make([]string, 0, len(res.Terminals))
	for _, t := range res.Terminals {
		tags.Terminals = append(tags.Terminals, name(t))
	}
	return res.Terminals, tagTask(ctx, tags)
}

// shareHere makes image local to region before a deploy or update writes it: a child
// ShareImage on central's queue, named after the calling task (ID/share).
func shareHere(ctx workflow.Context, region, image string) (ShareImageResult, error) {
	var res ShareImageResult
	share := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/share",
		TaskQueue:  activities.CentralQueue,
	})
	err := workflow.ExecuteChildWorkflow(share, ShareImage, ShareImageInput{Image: image, Target: region}).Get(ctx, &res)
	return res, err
}

// shareForTerminals brings image to region for a deploy or update (change is its GetVersion
// id): since that change the terminals start once the region has the version's manifest, while
// the share goes on (startShare; share is that share and termCtx, the terminals' context, is
// canceled if it fails); before it, the whole share ran first (shareHere, its result in whole).
func shareForTerminals(ctx workflow.Context, change, region, image string) (share *arrivingShare, whole ShareImageResult, termCtx workflow.Context, err error) {
	termCtx, cancelTerms := workflow.WithCancel(ctx)
	if workflow.GetVersion(ctx, change, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		whole, err = shareHere(ctx, region, image)
		return nil, whole, termCtx, err
	}
	if share, err = startShare(ctx, region, image); err != nil {
		return nil, whole, termCtx, err
	}
	workflow.Go(ctx, func(g workflow.Context) {
		if share.Wait(g) != nil {
			cancelTerms() // the terminals wait for chunks that will not come
		}
	})
	return share, whole, termCtx, nil
}

// arrivingShare is the share a deploy or update runs while its terminals already write: the
// version is resolved first, the share child started, and the terminals start once the region
// has the version's manifest (published, or arriving: checked against its id and signed), while
// the share goes on (docs/operations.md, docs/sharing.md).
type arrivingShare struct {
	Version string
	// Arriving says the terminals started before the version was published in the region.
	Arriving bool
	done     bool
	res      ShareImageResult
	err      error
}

// startShare resolves image (central's LocateVersion), starts the child ShareImage of
// NAME@VERSION (named ID/share, as shareHere names it) and returns once the region has the
// version's manifest, or with the share's error if it fails first. The share goes on in the
// background: wait with share.Wait. A version the region holds already is not shared.
func startShare(ctx workflow.Context, region, image string) (*arrivingShare, error) {
	var c *activities.Central
	var loc activities.LocateResult
	if err := workflow.ExecuteActivity(centralOptions(ctx), c.LocateVersion, activities.LocateInput{Image: image, Target: region}).Get(ctx, &loc); err != nil {
		return nil, err
	}
	s := &arrivingShare{Version: loc.Version}
	if loc.TargetHas {
		s.done, s.res = true, ShareImageResult{Version: loc.Version, Path: PathLocal}
		return s, nil
	}
	ref := image
	if r, err := manifest.ParseRef(image); err == nil {
		ref = manifest.Ref{Name: r.Name, Version: loc.Version}.String() // the version located, whatever the tag says later
	}
	child := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/share",
		TaskQueue:  activities.CentralQueue,
	})
	f := workflow.ExecuteChildWorkflow(child, ShareImage, ShareImageInput{Image: ref, Target: region})
	workflow.Go(ctx, func(g workflow.Context) {
		s.err = f.Get(g, &s.res)
		s.done = true
	})

	// Wait for the manifest in the region, or the share's end, whichever comes first.
	var r *activities.Region
	actx, cancel := workflow.WithCancel(workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              activities.RegionQueue(region),
		ScheduleToStartTimeout: 10 * time.Minute,
		StartToCloseTimeout:    12 * time.Hour,
		HeartbeatTimeout:       time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			MaximumAttempts:        10,
			NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadVersion),
		},
	}))
	var aw activities.AwaitVersionResult
	var awaitErr error
	awaited := false
	await := workflow.ExecuteActivity(actx, r.AwaitVersion, activities.AwaitVersionInput{Version: loc.Version})
	workflow.Go(ctx, func(g workflow.Context) {
		awaitErr = await.Get(g, &aw)
		awaited = true
	})
	if err := workflow.Await(ctx, func() bool { return awaited || s.done }); err != nil {
		cancel()
		return nil, err
	}
	cancel()
	if s.done && s.err != nil {
		return nil, s.err
	}
	if !s.done && awaitErr != nil {
		// The region could not say; the share decides.
		if err := s.Wait(ctx); err != nil {
			return nil, err
		}
	}
	s.Arriving = !s.done && aw.Arriving
	return s, nil
}

// Failed reports whether the share ended in failure.
func (s *arrivingShare) Failed() bool { return s.done && s.err != nil }

// Wait waits for the share's end and returns its error.
func (s *arrivingShare) Wait(ctx workflow.Context) error {
	if err := workflow.Await(ctx, func() bool { return s.done }); err != nil {
		return err
	}
	return s.err
}
