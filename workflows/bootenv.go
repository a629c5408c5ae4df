package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/agentwire"
	"tms/manifest"
)

// PublishBootEnv records a version of the in-memory OS published in a region's store (tms
// bootenv publish on the regional server) in central's catalog, where central signs it, and
// stores the signature beside it in the region's store. It runs on the central queue.
func PublishBootEnv(ctx workflow.Context, in activities.RegisterBootEnvInput) (activities.RegisterVersionResult, error) {
	var c *activities.Central
	var r *activities.Region
	var res activities.RegisterVersionResult
	if err := workflow.ExecuteActivity(centralOptions(ctx), c.RegisterBootEnv, in).Get(ctx, &res); err != nil {
		return res, err
	}
	err := workflow.ExecuteActivity(regionOptions(ctx, in.Region), r.StoreSignature,
		activities.StoreSignatureInput{Version: in.Info.Version, Signature: res.Signature}).Get(ctx, nil)
	return res, err
}

// DefaultCanaryTimeout is how long a rollout waits for its canary to come back from a new
// version of the in-memory OS.
const DefaultCanaryTimeout = 10 * time.Minute

// BootEnvRolloutInput asks for a version of the in-memory OS to become every listed region's.
type BootEnvRolloutInput struct {
	// Version is the version id (or a unique prefix of it, as tms bootenv ls shows it).
	Version string
	// Regions are rolled out to one at a time, in this order; empty: every region central
	// knows, sorted by id.
	Regions []string `json:",omitempty"`
	// Canaries name the terminals to try the version on: "REGION=TERMINAL" for one region's
	// (it must be usable), or a bare TERMINAL, used by the region that has it. A region none
	// names picks one itself (PickCanary).
	Canaries []string `json:",omitempty"`
	// CanaryTimeout bounds the wait for a canary's hello (default DefaultCanaryTimeout).
	CanaryTimeout time.Duration `json:",omitempty"`
	// By is who started the rollout.
	By string `json:",omitempty"`
}

// RolloutRegion is how far a rollout got in one region.
type RolloutRegion struct {
	Region string
	// Phase: queued, sharing, materializing, canary (PickCanary), probing (the canary boots the
	// new version), switching (the region's current version is set), done, failed.
	Phase    string
	Previous string `json:",omitempty"` // the region's version before the rollout ("" none)
	Canary   string `json:",omitempty"`
	// Probe is the canary's task, while it runs.
	Probe        *TerminalProgress `json:",omitempty"`
	AgentVersion string            `json:",omitempty"` // what the canary's agent reported
	Error        string            `json:",omitempty"`
}

// BootEnvRolloutResult is a rollout's outcome and, through the "progress" query, its progress.
type BootEnvRolloutResult struct {
	Version string
	Name    string
	Regions []RolloutRegion
}

// The phases of a rollout's region.
const (
	RolloutQueued        = "queued"
	RolloutSharing       = "sharing"
	RolloutMaterializing = "materializing"
	RolloutCanary        = "canary"
	RolloutProbing       = "probing"
	RolloutSwitching     = "switching"
	RolloutDone          = "done"
	RolloutFailed        = "failed"
)

// BootEnvRolloutWorkflowID is the readable id of the rollout of version.
func BootEnvRolloutWorkflowID(version string) string { return "bootenv-rollout/" + version }

// BootEnvRollout makes a version of the in-memory OS the current one of region after region:
// it shares the version to the region (a child ShareImage: signed, every chunk checked), has
// the region materialize it, picks a canary terminal, boots the canary into the new version
// with a probe (the agent says which version it booted and its release; the terminal then
// boots its own disk again), and only when the canary came back with that version makes it the
// region's current one (every server of the region serves it from then on) before going on to
// the next region. A canary that does not come back within CanaryTimeout, or comes back with
// another version, stops the rollout: it fails naming the region, the terminal and what
// happened, and that region keeps its previous version (regions after it are not touched). It
// runs on the central queue.
func BootEnvRollout(ctx workflow.Context, in BootEnvRolloutInput) (BootEnvRolloutResult, error) {
	res := BootEnvRolloutResult{Version: in.Version}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (BootEnvRolloutResult, error) { return res, nil }); err != nil {
		return res, err
	}
	var c *activities.Central
	cctx := centralOptions(ctx)
	var info activities.BootEnvInfo
	if err := workflow.ExecuteActivity(cctx, c.ResolveBootEnv, activities.BootEnvInput{Version: in.Version}).Get(ctx, &info); err != nil {
		return res, err
	}
	res.Version, res.Name = info.Version, info.Name
	regions := in.Regions
	if len(regions) == 0 {
		var out activities.ListRegionsResult
		if err := workflow.ExecuteActivity(cctx, c.ListRegions).Get(ctx, &out); err != nil {
			return res, err
		}
		for _, r := range out.Regions {
			regions = append(regions, r.ID)
		}
		slices.Sort(regions)
	}
	if len(regions) == 0 {
		return res, activities.ErrBadInput.New("central knows no region to roll out to", nil)
	}
	for _, r := range regions {
		res.Regions = append(res.Regions, RolloutRegion{Region: r, Phase: RolloutQueued})
	}
	timeout := in.CanaryTimeout
	if timeout <= 0 {
		timeout = DefaultCanaryTimeout
	}
	for i := range res.Regions {
		rr := &res.Regions[i]
		if err := rolloutRegion(ctx, in, info, timeout, rr); err != nil {
			rr.Phase, rr.Error = RolloutFailed, rootCause(err)
			return res, err
		}
		rr.Phase = RolloutDone
	}
	return res, nil
}

// rolloutRegion rolls the version out to one region (see BootEnvRollout).
func rolloutRegion(ctx workflow.Context, in BootEnvRolloutInput, info activities.BootEnvInfo, timeout time.Duration, rr *RolloutRegion) error {
	var r *activities.Region
	var c *activities.Central
	region := rr.Region
	version := info.Version
	local := bootEnvRegionOptions(ctx, region)

	rr.Phase = RolloutSharing
	share := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/share/" + region,
		TaskQueue:  activities.CentralQueue,
	})
	ref := manifest.Ref{Name: manifest.BootEnvPrefix + info.Name, Version: version}.String()
	if err := workflow.ExecuteChildWorkflow(share, ShareImage, ShareImageInput{Image: ref, Target: region}).Get(ctx, nil); err != nil {
		return fmt.Errorf("region %s: sharing bootenv %s: %w", region, short(version), err)
	}

	rr.Phase = RolloutMaterializing
	if err := workflow.ExecuteActivity(local, r.MaterializeBootEnv, activities.BootEnvInput{Version: version}).Get(ctx, nil); err != nil {
		return err
	}
	var cur activities.CurrentBootEnvResult
	if err := workflow.ExecuteActivity(local, r.CurrentBootEnv).Get(ctx, &cur); err != nil {
		return err
	}
	rr.Previous = cur.Version

	rr.Phase = RolloutCanary
	var canary activities.TerminalRef
	if err := workflow.ExecuteActivity(local, r.PickCanary, canaryFor(in.Canaries, region)).Get(ctx, &canary); err != nil {
		return err
	}
	rr.Canary = name(canary)

	rr.Phase = RolloutProbing
	rr.Probe = &TerminalProgress{Name: rr.Canary}
	_, out, err := agentTask(ctx, region, activities.TaskInput{TerminalRef: canary.MAC, Kind: agentwire.KindProbe, Version: version},
		AgentTimeouts{Silence: timeout, Tries: 1, Total: timeout}, rr.Probe)
	keeps := "the region keeps its previous bootenv " + orNone(cur.Version)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return activities.ErrCanaryFailed.New(fmt.Sprintf("region %s: canary %s did not come back from bootenv %s within %s: %s; %s",
			region, rr.Canary, short(version), timeout, rootCause(err), keeps), err)
	}
	rr.AgentVersion = out.AgentVersion
	if out.BootEnv != version {
		got := "the plain boot directory (or an agent too old to report its bootenv)"
		if out.BootEnv != "" {
			got = "bootenv " + short(out.BootEnv)
		}
		return activities.ErrCanaryFailed.New(fmt.Sprintf("region %s: canary %s came back from %s, not bootenv %s (agent %s); %s",
			region, rr.Canary, got, short(version), orNone(out.AgentVersion), keeps), nil)
	}

	rr.Phase = RolloutSwitching
	task := workflow.GetInfo(ctx).WorkflowExecution.ID
	at := workflow.Now(ctx)
	if err := workflow.ExecuteActivity(local, r.SetBootEnv, activities.SetBootEnvInput{Version: version, By: in.By, Task: task, At: at}).Get(ctx, nil); err != nil {
		return err
	}
	return workflow.ExecuteActivity(centralOptions(ctx), c.RecordRegionBootEnv,
		activities.RegionBootEnvInput{Region: region, Version: version, By: in.By, Task: task, At: at}).Get(ctx, nil)
}

// bootEnvRegionOptions are regionOptions with room for a materialization (it reads and writes
// the whole version) and the rollout's own refusals.
func bootEnvRegionOptions(ctx workflow.Context, region string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              activities.RegionQueue(region),
		ScheduleToStartTimeout: 10 * time.Minute,
		StartToCloseTimeout:    10 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			MaximumAttempts: 10,
			NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput, activities.ErrBadImage, activities.ErrBadVersion,
				activities.ErrBadSignature, activities.ErrNotHere, activities.ErrNoCanary, activities.ErrSourceCorrupt),
		},
	})
}

// canaryFor is region's canary among the rollout's: "REGION=TERMINAL" for it, else the bare
// names (the region uses the first it has), else none (it picks one).
func canaryFor(canaries []string, region string) activities.CanaryInput {
	var in activities.CanaryInput
	for _, c := range canaries {
		if r, t, ok := strings.Cut(c, "="); ok {
			if r == region {
				return activities.CanaryInput{Terminal: t}
			}
			continue
		}
		in.Candidates = append(in.Candidates, c)
	}
	return in
}

func short(version string) string {
	if len(version) > 12 {
		return version[:12]
	}
	return version
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
