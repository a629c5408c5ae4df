package workflows

import (
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Every task an admin starts (capture, deploy, update, power, share) is a workflow whose id is
// readable and unique per run, and which carries search attributes saying what it is about, so
// that `tms task ls --region R --kind K --group G --terminal T` and the Temporal UI's filters find
// it without reading its input.

// Search attributes of tasks. Central registers them when it starts (server.EnsureSearchAttributes).
var (
	// AttrRegion is the region a task works in (a share: the region it copies to).
	AttrRegion = temporal.NewSearchAttributeKeyKeyword("TmsRegion")
	// AttrKind is what the task does: one of the Task* kinds.
	AttrKind = temporal.NewSearchAttributeKeyKeyword("TmsKind")
	// AttrGroup is the group a task was started for, if any.
	AttrGroup = temporal.NewSearchAttributeKeyKeyword("TmsGroup")
	// AttrTerminals are the names of the terminals the task works on (a group's members once
	// the task has resolved them).
	AttrTerminals = temporal.NewSearchAttributeKeyKeywordList("TmsTerminals")
	// AttrImage is the image the task captures, deploys, updates or shares.
	AttrImage = temporal.NewSearchAttributeKeyKeyword("TmsImage")
	// AttrStartAt is when a task asked for later starts (`--at`); unset for a task that
	// started when it was asked for.
	AttrStartAt = temporal.NewSearchAttributeKeyTime("TmsStartAt")
	// AttrStartedBy is who started the task: the user's name as their token says, or
	// "schedule:NAME" for a schedule's firings. The authorizer refuses a start that names anyone
	// but the caller.
	AttrStartedBy = temporal.NewSearchAttributeKeyKeyword("TmsStartedBy")
)

// SearchAttributes lists every tms search attribute, for registration.
func SearchAttributes() []temporal.SearchAttributeKey {
	return []temporal.SearchAttributeKey{AttrRegion, AttrKind, AttrGroup, AttrTerminals, AttrImage, AttrStartAt, AttrStartedBy}
}

// Task kinds as `tms task ls --kind` and AttrKind name them.
const (
	TaskCapture  = "capture"
	TaskDeploy   = "deploy"
	TaskUpdate   = "update"
	TaskPowerOn  = "power-on"
	TaskPowerOff = "power-off"
	TaskReboot   = "reboot"
	TaskShare    = "share"
	// TaskConfig changes a region's run-time settings (tms region config set).
	TaskConfig = "config"
	// TaskPlan is a pre-distribution plan (tms plan create), on central's queue.
	TaskPlan = "plan"
)

// TaskKinds are the task kinds, in the order listings explain them.
var TaskKinds = []string{TaskCapture, TaskDeploy, TaskUpdate, TaskPowerOn, TaskPowerOff, TaskReboot, TaskShare, TaskConfig, TaskPlan}

// TaskTags say what a task is about, for its search attributes.
type TaskTags struct {
	Region    string
	Kind      string
	Group     string
	Terminals []string
	Image     string
	StartAt   time.Time // zero: started when asked for
	StartedBy string    // a user's name, or "schedule:NAME"
}

// searchAttributes returns the tags as search attribute updates (empty ones left out).
func (t TaskTags) searchAttributes() []temporal.SearchAttributeUpdate {
	var u []temporal.SearchAttributeUpdate
	for _, kv := range []struct {
		k temporal.SearchAttributeKeyKeyword
		v string
	}{{AttrRegion, t.Region}, {AttrKind, t.Kind}, {AttrGroup, t.Group}, {AttrImage, t.Image}, {AttrStartedBy, t.StartedBy}} {
		if kv.v != "" {
			u = append(u, kv.k.ValueSet(kv.v))
		}
	}
	if len(t.Terminals) > 0 {
		u = append(u, AttrTerminals.ValueSet(t.Terminals))
	}
	if !t.StartAt.IsZero() {
		u = append(u, AttrStartAt.ValueSet(t.StartAt))
	}
	return u
}

// StartAttributes returns the tags as the search attributes a task is started with.
func (t TaskTags) StartAttributes() temporal.SearchAttributes {
	return temporal.NewSearchAttributes(t.searchAttributes()...)
}

// tagTask sets a running task's search attributes (a workflow started by an older tms, or by a
// schedule whose action carried fewer tags, gets them here). Workflows recorded before tasks
// were tagged replay without it.
func tagTask(ctx workflow.Context, t TaskTags) error {
	if workflow.GetVersion(ctx, "task-tags", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	u := t.searchAttributes()
	if len(u) == 0 {
		return nil
	}
	return workflow.UpsertTypedSearchAttributes(ctx, u...)
}

// runStamp is the suffix that makes a task's readable id unique per run: the time it was
// asked for, in UTC, to the second.
const runStamp = "20060102-150405"

// Stamped makes a task's readable id (DeployWorkflowID, CaptureWorkflowID, ...) unique per
// run: ID/STAMP, STAMP being the time the task was asked for, in UTC, to the second. Two tasks
// asked for in the same second with the same words share an id: the second is refused as
// already running.
func Stamped(id string, at time.Time) string { return id + "/" + at.UTC().Format(runStamp) }

// Target is how task ids name what a task works on: the group, or the terminals joined by commas.
func Target(group string, terminals []string) string {
	if group != "" {
		return group
	}
	return strings.Join(terminals, ",")
}
