package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/settings"
)

// ShareImageInput asks for an image to be made available in a region.
type ShareImageInput struct {
	Image  string // NAME, NAME:TAG or NAME@VERSION
	Target string // region id
	// Heartbeat is the longest a transfer may go without reporting progress before it counts
	// as lost (its worker died, say) and is retried where it stopped (default 2 minutes).
	Heartbeat time.Duration
	// StartAt is when the share starts; zero: at once. Until then "modify" may change it and
	// the image.
	StartAt time.Time
	// Rate caps the share's transfer, in bytes a second, below the regions' own WAN caps
	// (wan_rate, wan_rate_windows), which still apply; 0: only theirs (settings.ParseRate reads
	// what people write). A peer pull is capped by the pulling region; a relay by both regions.
	Rate int64
}

// ShareImageResult says how the image got there.
type ShareImageResult struct {
	Version    string
	Path       SharePath
	Source     string // the region it came from
	MovedBytes int64
}

// ShareProgress is what the "progress" query returns.
type ShareProgress struct {
	Phase  Phase // PhaseLocating, PhasePeerPull, PhaseRelay, PhaseRecording, PhaseDone
	Source string
	Tried  []string // what failed so far, for people
}

// ShareWorkflowID is the readable id of the workflow that shares image with region target.
func ShareWorkflowID(image, target string) string { return "share/" + image + "/" + target }

// maxPeerTries bounds how many source regions are asked directly before the relay is used.
const maxPeerTries = 2

// ShareImage makes an image's version present and verified in the target region: nothing to
// do if it is there; otherwise a peer pull from the nearest region holding a verified copy
// (with a short-lived grant from central), and if peers cannot be reached or fail, a relay
// through central storage, pipelined so the target pulls while the source uploads. The new
// location is recorded in the catalog only after the target has checked every chunk.
func ShareImage(ctx workflow.Context, in ShareImageInput) (ShareImageResult, error) {
	var res ShareImageResult
	prog := &ShareProgress{Phase: PhaseLocating}
	if in.Rate != 0 && (in.Rate < settings.MinRate || in.Rate > settings.MaxRate) {
		return res, activities.ErrBadInput.New(fmt.Sprintf("a share's rate of %d bytes a second: it is 0 (only the regions' caps) or %s to %s",
			in.Rate, settings.FormatRate(settings.MinRate), settings.FormatRate(settings.MaxRate)), nil)
	}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (ShareProgress, error) { return *prog, nil }); err != nil {
		return res, err
	}
	if !in.StartAt.IsZero() {
		prog.Phase = PhaseScheduled
	}
	if err := awaitStart(ctx, startFields{At: &in.StartAt, Image: &in.Image}, func() TaskTags {
		return TaskTags{Region: in.Target, Kind: TaskShare, Image: in.Image, StartAt: in.StartAt}
	}); err != nil {
		return res, err
	}
	prog.Phase = PhaseLocating
	if err := tagTask(ctx, TaskTags{Region: in.Target, Kind: TaskShare, Image: in.Image}); err != nil {
		return res, err
	}
	var c *activities.Central
	var r *activities.Region
	central := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           activities.CentralQueue,
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 10},
	})

	var loc activities.LocateResult
	if err := workflow.ExecuteActivity(central, c.LocateVersion, activities.LocateInput{Image: in.Image, Target: in.Target}).Get(ctx, &loc); err != nil {
		return res, err
	}
	res.Version = loc.Version
	if loc.TargetHas {
		res.Path = PathLocal
		prog.Phase = PhaseDone
		return res, nil
	}

	heartbeat := in.Heartbeat
	if heartbeat <= 0 {
		heartbeat = 2 * time.Minute
	}
	transfer := func(queue string) workflow.Context {
		return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:              queue,
			ScheduleToStartTimeout: 10 * time.Minute, // the region's worker is down
			StartToCloseTimeout:    12 * time.Hour,
			HeartbeatTimeout:       heartbeat,
			RetryPolicy: &temporal.RetryPolicy{
				InitialInterval: 5 * time.Second, MaximumAttempts: 3,
				NonRetryableErrorTypes: activities.NonRetryable(activities.ErrSourceCorrupt, activities.ErrBadVersion, activities.ErrBadEndpoint, activities.ErrNoRelay, activities.ErrNotHere),
			},
		})
	}
	target := transfer(activities.RegionQueue(in.Target))

	done := func(path SharePath, source string, moved int64) (ShareImageResult, error) {
		prog.Phase = PhaseRecording
		if err := workflow.ExecuteActivity(central, c.RecordLocation, activities.RecordInput{Version: loc.Version, Region: in.Target}).Get(ctx, nil); err != nil {
			return res, err
		}
		prog.Phase = PhaseDone
		res.Path, res.Source, res.MovedBytes = path, source, moved
		return res, nil
	}

	for i, src := range loc.Sources {
		if i == maxPeerTries {
			break
		}
		prog.Phase, prog.Source = PhasePeerPull, src.Region
		var g activities.GrantResult
		if err := workflow.ExecuteActivity(central, c.MintGrant, activities.GrantInput{Version: loc.Version, Audience: in.Target, Server: src.Region}).Get(ctx, &g); err != nil {
			return res, err
		}
		var mv activities.MoveResult
		err := workflow.ExecuteActivity(target, r.PullFromPeer, activities.PullInput{Version: loc.Version, Endpoint: src.Endpoint, Grant: g.Token, Rate: in.Rate}).Get(ctx, &mv)
		if err == nil {
			return done(PathPeer, src.Region, mv.MovedBytes)
		}
		if ctx.Err() != nil {
			return res, err
		}
		prog.Tried = append(prog.Tried, fmt.Sprintf("peer pull from %s: %v", src.Region, rootCause(err)))
		workflow.GetLogger(ctx).Warn("peer pull failed", "source", src.Region, "error", err)
	}

	for _, src := range loc.Sources {
		prog.Phase, prog.Source = PhaseRelay, src.Region
		pushCtx, cancelPush := workflow.WithCancel(transfer(activities.RegionQueue(src.Region)))
		pullCtx, cancelPull := workflow.WithCancel(target)
		push := workflow.ExecuteActivity(pushCtx, r.PushToRelay, activities.RelayInput{Version: loc.Version, Rate: in.Rate})
		pull := workflow.ExecuteActivity(pullCtx, r.PullFromRelay, activities.RelayInput{Version: loc.Version, Rate: in.Rate})
		var pushErr, pullErr error
		var pulled activities.MoveResult
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(push, func(f workflow.Future) {
			if pushErr = f.Get(ctx, nil); pushErr != nil {
				cancelPull() // the pull would wait for chunks that never come
			}
		})
		sel.AddFuture(pull, func(f workflow.Future) {
			if pullErr = f.Get(ctx, &pulled); pullErr != nil {
				cancelPush()
			}
		})
		sel.Select(ctx)
		sel.Select(ctx)
		cancelPush()
		cancelPull()
		if pushErr == nil && pullErr == nil {
			return done(PathRelay, src.Region, pulled.MovedBytes)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		err := pushErr
		if err == nil || isCanceled(err) {
			err = pullErr
		}
		prog.Tried = append(prog.Tried, fmt.Sprintf("relay from %s: %v", src.Region, rootCause(err)))
	}
	return res, activities.ErrShareFailed.New(
		fmt.Sprintf("could not bring %s to region %s: %v", in.Image, in.Target, prog.Tried), nil)
}

func isCanceled(err error) bool {
	var ce *temporal.CanceledError
	return errors.As(err, &ce)
}

// rootCause returns the message an admin should read: an application error's own message, or
// the innermost error's, without the layers of Temporal context around it.
func rootCause(err error) string {
	var ae *temporal.ApplicationError
	if errors.As(err, &ae) {
		return ae.Message()
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
