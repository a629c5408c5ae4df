package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"tms/auth"
	"tms/manifest"
	"tms/state"
	"tms/workflows"
)

// `tms task ls` asks Temporal's visibility store for tasks by the search attributes every task
// carries (workflows.TaskTags). Every value a user gives is checked against what tms names can
// be before it goes into the query, and quoted; a value that could break out of its quotes is
// refused, never escaped.

type taskState struct {
	word   string
	status enumspb.WorkflowExecutionStatus
}

// taskStates are the words --state takes and the listing shows, with the execution status each
// stands for. "waiting" is a running task whose start time (--at) has not come.
var taskStates = []taskState{
	{"waiting", enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING},
	{"running", enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING},
	{"completed", enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED},
	{"failed", enumspb.WORKFLOW_EXECUTION_STATUS_FAILED},
	{"canceled", enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED},
	{"terminated", enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED},
	{"timed-out", enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT},
}

func stateWords() string {
	w := make([]string, len(taskStates))
	for i, s := range taskStates {
		w[i] = s.word
	}
	return strings.Join(w, ", ")
}

// stateWord is how the listing names a task's state: its execution status, "waiting" for a
// running task whose start time is ahead.
func stateWord(status enumspb.WorkflowExecutionStatus, startAt *time.Time, now time.Time) string {
	if status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING && startAt != nil && now.Before(*startAt) {
		return "waiting"
	}
	for _, s := range taskStates[1:] {
		if s.status == status {
			return s.word
		}
	}
	return strings.ToLower(status.String())
}

// taskFilter is what `tms task ls` was asked for.
type taskFilter struct {
	Region, Kind, State, Group, Terminal string
	// By is who started the task: a user name, or schedule:NAME.
	By string
	// All lists finished tasks too (without State, only unfinished ones are listed).
	All bool
	// Children lists the child workflows of tasks (a deploy's per-terminal tasks and share) too.
	Children bool
}

// query builds the visibility query for f, as of now (for "waiting"). It refuses values that
// cannot be a region, kind, state, group or terminal, saying which and why.
func (f taskFilter) query(now time.Time) (string, error) {
	// Every task carries TmsKind from its start (workflows.TaskTags.StartAttributes).
	conds := []string{workflows.AttrKind.GetName() + " IS NOT NULL"}
	if !f.Children {
		conds = append(conds, "ParentWorkflowId IS NULL")
	}
	eq := func(attr, v string) error {
		q, err := quote(v)
		if err != nil {
			return err
		}
		conds = append(conds, attr+" = "+q)
		return nil
	}
	if f.Region != "" {
		if err := state.ValidateRegionID(f.Region); err != nil {
			return "", fmt.Errorf("--region: %w", err)
		}
		if err := eq(workflows.AttrRegion.GetName(), f.Region); err != nil {
			return "", err
		}
	}
	if f.Kind != "" {
		if !slices.Contains(workflows.TaskKinds, f.Kind) {
			return "", fmt.Errorf("--kind %q is not a task kind; kinds: %s", clipArg(f.Kind), strings.Join(workflows.TaskKinds, ", "))
		}
		if err := eq(workflows.AttrKind.GetName(), f.Kind); err != nil {
			return "", err
		}
	}
	if f.Group != "" {
		if err := manifest.ValidateName(f.Group); err != nil {
			return "", fmt.Errorf("--group: %s", strings.Replace(err.Error(), "image name", "group name", 1))
		}
		if err := eq(workflows.AttrGroup.GetName(), f.Group); err != nil {
			return "", err
		}
	}
	if f.Terminal != "" {
		t := f.Terminal
		if mac, err := state.NormalizeMAC(t); err == nil {
			t = mac
		} else if err := manifest.ValidateName(t); err != nil {
			return "", fmt.Errorf("--terminal %q is neither a terminal name nor a MAC: %s", clipArg(t), strings.TrimPrefix(err.Error(), "image name "))
		}
		// A keyword list matches when any of its values does: a group task lists its members.
		if err := eq(workflows.AttrTerminals.GetName(), t); err != nil {
			return "", err
		}
	}
	if f.By != "" {
		name, sched := strings.CutPrefix(f.By, "schedule:")
		var err error
		if sched {
			err = manifest.ValidateName(name)
		} else {
			err = auth.ValidateUserName(name)
		}
		if err != nil {
			return "", fmt.Errorf("--by %q is neither a user name nor schedule:NAME: %w", clipArg(f.By), err)
		}
		if err := eq(workflows.AttrStartedBy.GetName(), f.By); err != nil {
			return "", err
		}
	}
	switch f.State {
	case "":
		if !f.All {
			conds = append(conds, "ExecutionStatus = 'Running'")
		}
	case "waiting", "running":
		conds = append(conds, "ExecutionStatus = 'Running'")
		// "running" lists the waiting tasks too: they are under way, only not yet started.
		if f.State == "waiting" {
			conds = append(conds, workflows.AttrStartAt.GetName()+" > '"+now.UTC().Format(time.RFC3339Nano)+"'")
		}
	default:
		i := slices.IndexFunc(taskStates, func(s taskState) bool { return s.word == f.State })
		if i < 0 {
			return "", fmt.Errorf("--state %q is not a task state; states: %s", clipArg(f.State), stateWords())
		}
		conds = append(conds, "ExecutionStatus = '"+visibilityStatus(taskStates[i].status)+"'")
	}
	return strings.Join(conds, " AND "), nil
}

// visibilityStatus is how visibility queries name an execution status: Running, TimedOut...
// (the enum's String).
func visibilityStatus(s enumspb.WorkflowExecutionStatus) string { return s.String() }

// maxQueryValue bounds a value put into a visibility query.
const maxQueryValue = 256

// quote makes v a visibility query string literal. Values checked above cannot hold quotes or
// backslashes; this refuses them again rather than trusting every caller to have checked.
func quote(v string) (string, error) {
	if v == "" || len(v) > maxQueryValue {
		return "", fmt.Errorf("a query value must be 1 to %d bytes long", maxQueryValue)
	}
	for _, r := range v {
		if r == '\'' || r == '"' || r == '\\' || r == '`' || r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%q: quotes, backslashes and control characters cannot be in a query value", clipArg(v))
		}
	}
	return "'" + v + "'", nil
}

// clipArg shortens what a user typed for an error message.
func clipArg(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
