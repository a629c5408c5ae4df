package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/settings"
)

// ConfigureRegionInput is a run-time setting central pushes to a region.
type ConfigureRegionInput struct {
	Region string
	Key    string // one of settings.Keys()
	Value  string
	// StartedBy is who asked for the change (TaskTags.StartedBy); empty if the CLI did not know.
	StartedBy string
	// OfflineWait is how long the push waits for an offline region to come back before it
	// gives up (default DefaultOfflineWait).
	OfflineWait time.Duration
}

// ConfigureRegionResult is the setting as the region applied it.
type ConfigureRegionResult struct {
	Key      string
	Value    string // the effective value, in its canonical form
	Previous string // the region's value before
	At       time.Time
}

// ConfigureProgress is what the "progress" query of ConfigureRegion returns.
type ConfigureProgress struct {
	Phase Phase // PhaseApplying, PhaseRecording, PhaseDone
	Key   string
	Value string
}

// Phases of ConfigureRegion.
const (
	// PhaseApplying: the push waits for the region to apply it (an offline region: until it
	// comes back).
	PhaseApplying Phase = "applying"
)

// DefaultOfflineWait is how long a push waits for an offline region: a school's holidays are
// longer than a weekend, and a setting that waits is harmless. After it the push fails and
// changes nothing.
const DefaultOfflineWait = 21 * 24 * time.Hour

// ConfigMemoKey and ConfigMemoValue name the memo fields a ConfigureRegion workflow is started
// with, so that `tms region config show` lists pending pushes from visibility alone.
const (
	ConfigMemoKey   = "key"
	ConfigMemoValue = "value"
)

// ConfigWorkflowID is the readable id of a push of key to region (made unique by Stamped).
func ConfigWorkflowID(region, key string) string { return "config/" + region + "/" + key }

// ConfigureRegion changes one of a region's run-time settings: the value is validated here
// (the same check the CLI and the region make), applied by the region, which stores it so that
// a restart keeps it and uses it at once, and recorded in central's catalog, so that central
// shows what the region runs with even while the region is offline. An offline region applies
// the push when it comes back (within OfflineWait). It runs on the central queue.
func ConfigureRegion(ctx workflow.Context, in ConfigureRegionInput) (ConfigureRegionResult, error) {
	var res ConfigureRegionResult
	prog := &ConfigureProgress{Phase: PhaseApplying, Key: in.Key, Value: in.Value}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (ConfigureProgress, error) { return *prog, nil }); err != nil {
		return res, err
	}
	if err := tagTask(ctx, TaskTags{Region: in.Region, Kind: TaskConfig, StartedBy: in.StartedBy}); err != nil {
		return res, err
	}

	value, err := settings.Check(in.Key, in.Value)
	if err != nil {
		return res, activities.ErrBadInput.New(err.Error(), err)
	}
	prog.Value = value

	var r *activities.Region
	wait := in.OfflineWait
	if wait <= 0 {
		wait = DefaultOfflineWait
	}
	region := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              activities.RegionQueue(in.Region),
		ScheduleToStartTimeout: wait, // the region is offline: it applies the push when it returns
		StartToCloseTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			MaximumAttempts:        10,
			NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput),
		},
	})
	var applied activities.ApplySettingResult
	task := workflow.GetInfo(ctx).WorkflowExecution.ID
	if err := workflow.ExecuteActivity(region, r.ApplySetting, activities.ApplySettingInput{
		Key: in.Key, Value: value, By: in.StartedBy, Task: task}).Get(ctx, &applied); err != nil {
		return res, err
	}
	res = ConfigureRegionResult{Key: applied.Key, Value: applied.Value, Previous: applied.Previous, At: applied.At}

	prog.Phase = PhaseRecording
	var c *activities.Central
	if err := workflow.ExecuteActivity(centralOptions(ctx), c.RecordRegionSetting, activities.RecordSettingInput{
		Region: in.Region, Key: applied.Key, Value: applied.Value, By: in.StartedBy, Task: task, At: applied.At}).Get(ctx, nil); err != nil {
		return res, err
	}
	prog.Phase = PhaseDone
	return res, nil
}
