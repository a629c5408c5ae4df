package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/agentwire"
	"tms/manifest"
)

// CaptureImageInput asks for a terminal's disk to be captured as a new version of an image.
type CaptureImageInput struct {
	Region string
	// TerminalRef names the terminal: its name or its MAC.
	TerminalRef string `json:"Terminal"`
	Image       string // image name; the new version becomes NAME:latest
	Timeouts    AgentTimeouts
	// StartAt is when the capture starts; zero: at once. Until then "modify" may change it
	// and the image name.
	StartAt time.Time
}

// CaptureImageResult names the new version.
type CaptureImageResult struct {
	Version string
	Image   string
	// TerminalRef is the terminal as the input named it (name or MAC).
	TerminalRef string `json:"Terminal"`
	DiskSize    int64
	StoredBytes int64
}

// CaptureProgress is what CaptureImage's "progress" query returns.
type CaptureProgress struct {
	TerminalProgress
	Version string `json:",omitempty"`
}

// CaptureWorkflowID is the readable id of the workflow that captures terminal into image.
func CaptureWorkflowID(region, terminal, image string) string {
	return "capture/" + region + "/" + terminal + "/" + image
}

// CaptureImage captures a terminal's disk: its next network boot runs the agent in capture
// mode, the terminal is rebooted, its agent uploads the chunks the region lacks and then the
// manifest, which the region checks and publishes as NAME:latest; the new version is then
// recorded in central's catalog with the region's copy as verified, central signs it, and the
// signature is stored beside the version in the region's store (the region deploys only signed
// versions). The workflow runs on the region's task queue.
func CaptureImage(ctx workflow.Context, in CaptureImageInput) (CaptureImageResult, error) {
	res := CaptureImageResult{Image: in.Image, TerminalRef: in.TerminalRef}
	prog := &CaptureProgress{TerminalProgress: TerminalProgress{Name: in.TerminalRef, Phase: PhasePreparing}}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (CaptureProgress, error) { return *prog, nil }); err != nil {
		return res, err
	}
	if !in.StartAt.IsZero() {
		prog.Phase = PhaseScheduled
	}
	if err := awaitStart(ctx, startFields{At: &in.StartAt, Image: &in.Image, ImageIsName: true}, func() TaskTags {
		return TaskTags{Region: in.Region, Kind: TaskCapture, Terminals: []string{in.TerminalRef}, Image: in.Image, StartAt: in.StartAt}
	}); err != nil {
		return res, err
	}
	res.Image, prog.Phase = in.Image, PhasePreparing
	if err := tagTask(ctx, TaskTags{Region: in.Region, Kind: TaskCapture, Terminals: []string{in.TerminalRef}, Image: in.Image}); err != nil {
		return res, err
	}
	var r *activities.Region
	var c *activities.Central
	_, out, err := agentTask(ctx, in.Region, activities.TaskInput{TerminalRef: in.TerminalRef, Kind: agentwire.KindCapture, Image: in.Image}, in.Timeouts, &prog.TerminalProgress)
	if err != nil {
		return res, err
	}
	res.Version, prog.Version = out.Version, out.Version
	prog.Phase = PhaseRegistering
	// The region tags the version only now that its terminal task is done (before this
	// version of the workflow, the agent API tagged it when the agent published).
	if workflow.GetVersion(ctx, "capture-tag-after-task", workflow.DefaultVersion, 1) == 1 {
		tag := activities.TagInput{Image: in.Image, Tag: manifest.DefaultTag, Version: out.Version}
		if err := workflow.ExecuteActivity(regionOptions(ctx, in.Region), r.TagVersion, tag).Get(ctx, nil); err != nil {
			return res, err
		}
	}
	var info activities.VersionInfo
	if err := workflow.ExecuteActivity(regionOptions(ctx, in.Region), r.DescribeVersion, activities.VersionInput{Version: out.Version}).Get(ctx, &info); err != nil {
		return res, err
	}
	res.DiskSize, res.StoredBytes = info.DiskSize, info.StoredBytes
	reg := activities.RegisterVersionInput{Info: info, Tag: "latest", Region: in.Region}
	var signed activities.RegisterVersionResult
	if err := workflow.ExecuteActivity(centralOptions(ctx), c.RegisterVersion, reg).Get(ctx, &signed); err != nil {
		return res, err
	}
	// Workflows started before central signed versions registered without storing a signature.
	if workflow.GetVersion(ctx, "store-signature", workflow.DefaultVersion, 1) >= 1 {
		prog.Phase = PhaseSigning
		sig := activities.StoreSignatureInput{Version: out.Version, Signature: signed.Signature}
		if err := workflow.ExecuteActivity(regionOptions(ctx, in.Region), r.StoreSignature, sig).Get(ctx, nil); err != nil {
			return res, err
		}
	}
	prog.Phase = PhaseDone
	return res, nil
}
