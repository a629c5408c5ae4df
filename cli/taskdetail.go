package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"

	"tms/activities"
	"tms/transfer"
	"tms/workflows"
)

// What a task is doing, read from Temporal: its pending steps, their heartbeats, the workflow's
// progress query, and one-line summaries of progress and outcome for people.

// pendingActivity is a step of a task under way.
type pendingActivity struct {
	Type          string     `json:"type"`
	State         string     `json:"state"`
	Attempt       int32      `json:"attempt"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	// Progress is the step's last heartbeat: an agent's report (activities.AgentProgress) or a
	// transfer's (transfer.Progress), as they come.
	Progress    json.RawMessage `json:"progress,omitempty"`
	LastFailure string          `json:"last_failure,omitempty"`
	progress    string
}

// taskDetail is the output of `tms task show`.
type taskDetail struct {
	ID        string            `json:"id"`
	RunID     string            `json:"run_id"`
	Type      string            `json:"type"`
	Kind      string            `json:"kind,omitempty"`
	Region    string            `json:"region,omitempty"`
	Group     string            `json:"group,omitempty"`
	Targets   []string          `json:"targets,omitempty"` // the terminals it works on, as named or resolved
	Image     string            `json:"image,omitempty"`
	State     string            `json:"state"` // as `tms task ls` says it
	StartAt   *time.Time        `json:"start_at,omitempty"`
	Schedule  string            `json:"schedule,omitempty"`
	Status    string            `json:"status"`
	Start     time.Time         `json:"start"`
	Close     *time.Time        `json:"close,omitempty"`
	TaskQueue string            `json:"task_queue"`
	Progress  json.RawMessage   `json:"progress,omitempty"`
	Pending   []pendingActivity `json:"pending_activities"`
	Children  []string          `json:"children,omitempty"`
	Failure   string            `json:"failure,omitempty"`
	Result    json.RawMessage   `json:"result,omitempty"`
	Summary   string            `json:"summary,omitempty"`
	// Terminals is each terminal's outcome (a finished task) or phase (a running one).
	Terminals []terminalLine `json:"terminals,omitempty"`
	URL       string         `json:"url"`
	// children are the running child tasks of a deploy, for its progress line.
	children []*taskDetail
}

// maxFollowedChildren bounds the child tasks a deploy's progress line asks about each time.
const maxFollowedChildren = 64

// describe gathers what Temporal knows of a task; with query, also the workflow's own
// progress report while it runs.
func (c *tclient) describe(ctx context.Context, id string, query bool) (*taskDetail, error) {
	resp, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return nil, notFound(err, id)
	}
	info := resp.GetWorkflowExecutionInfo()
	at := decodeTaskAttrs(info.GetSearchAttributes())
	d := &taskDetail{ID: id, RunID: info.GetExecution().GetRunId(), Type: info.GetType().GetName(), Status: info.GetStatus().String(),
		Kind: at.Kind, Region: at.Region, Group: at.Group, Targets: at.Terminals, Image: at.Image, StartAt: at.StartAt, Schedule: at.Schedule,
		State: stateWord(info.GetStatus(), at.StartAt, time.Now()),
		Start: info.GetStartTime().AsTime(), TaskQueue: info.GetTaskQueue(), Pending: []pendingActivity{}, URL: c.uiURL(id)}
	if info.GetCloseTime() != nil {
		t := info.GetCloseTime().AsTime()
		d.Close = &t
	}
	for _, pa := range resp.GetPendingActivities() {
		p := pendingActivity{Type: pa.GetActivityType().GetName(), State: strings.ToLower(strings.TrimPrefix(pa.GetState().String(), "PENDING_ACTIVITY_STATE_")),
			Attempt: pa.GetAttempt()}
		if pa.GetLastHeartbeatTime() != nil {
			t := pa.GetLastHeartbeatTime().AsTime()
			p.LastHeartbeat = &t
		}
		if f := pa.GetLastFailure(); f != nil {
			p.LastFailure = f.GetMessage()
		}
		p.Progress, p.progress = heartbeat(p.Type, pa.GetHeartbeatDetails())
		d.Pending = append(d.Pending, p)
	}
	for _, ch := range resp.GetPendingChildren() {
		d.Children = append(d.Children, ch.GetWorkflowId())
	}
	if info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING && query {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if v, err := c.QueryWorkflow(qctx, id, "", workflows.QueryProgress); err == nil {
			var raw json.RawMessage
			if v.Get(&raw) == nil {
				d.Progress = raw
				d.Terminals = terminalLines(raw, true)
			}
		}
		// A deploy's bytes move in its children: the share, and one task per terminal.
		if d.Type == workflows.NameDeployImage || d.Type == workflows.NameUpdateImage {
			for i, ch := range d.Children {
				if i == maxFollowedChildren {
					break
				}
				if cd, err := c.describe(ctx, ch, false); err == nil {
					d.children = append(d.children, cd)
				}
			}
		}
	}
	return d, nil
}

// taskAttrs are a task's tms search attributes (workflows.TaskTags) as visibility returns them.
type taskAttrs struct {
	Kind, Region, Group, Image string
	// StartedBy is who started the task: a user, or schedule:NAME (TmsStartedBy).
	StartedBy string
	Terminals []string
	StartAt   *time.Time
	// Schedule is the schedule whose firing started the task (Temporal's TemporalScheduledById).
	Schedule string
}

// attrScheduledBy is the search attribute Temporal sets on a workflow a schedule started.
const attrScheduledBy = "TemporalScheduledById"

func decodeTaskAttrs(sa *commonpb.SearchAttributes) taskAttrs {
	f := sa.GetIndexedFields()
	dc := converter.GetDefaultDataConverter()
	str := func(k string) string {
		var s string
		if p, ok := f[k]; ok && dc.FromPayload(p, &s) != nil {
			var l []string // a keyword stored as a list of one
			if dc.FromPayload(p, &l) == nil && len(l) > 0 {
				s = l[0]
			}
		}
		return s
	}
	a := taskAttrs{Kind: str(workflows.AttrKind.GetName()), Region: str(workflows.AttrRegion.GetName()), Group: str(workflows.AttrGroup.GetName()),
		Image: str(workflows.AttrImage.GetName()), Schedule: str(attrScheduledBy), StartedBy: str(workflows.AttrStartedBy.GetName())}
	if p, ok := f[workflows.AttrTerminals.GetName()]; ok {
		if dc.FromPayload(p, &a.Terminals) != nil {
			var one string
			if dc.FromPayload(p, &one) == nil && one != "" {
				a.Terminals = []string{one}
			}
		}
	}
	if p, ok := f[workflows.AttrStartAt.GetName()]; ok {
		var t time.Time
		if dc.FromPayload(p, &t) == nil && !t.IsZero() {
			a.StartAt = &t
		}
	}
	return a
}

// terminalLine is one terminal of a task: how it ended, or where it stands.
type terminalLine struct {
	Terminal string `json:"terminal"`
	// State is "ok" or "failed" for a finished terminal, its phase while it runs.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Details are the rest of what the task says of the terminal (bytes written, an update's
	// decision...), as it says it.
	Details map[string]json.RawMessage `json:"details,omitempty"`
}

// maxTerminalLines bounds the terminals `tms task show` reads from one result.
const maxTerminalLines = 10000

// terminalLines reads the per-terminal part of a task's result or progress, whatever the
// task: a list "Terminals" of objects naming the terminal ("Terminal") with either OK and
// Error (an outcome) or Phase and Error (progress). Other fields become Details. In a running
// task's progress, a terminal not OK without an error or phase is "under way", not failed.
func terminalLines(raw json.RawMessage, running bool) []terminalLine {
	var r struct{ Terminals []map[string]json.RawMessage }
	if json.Unmarshal(raw, &r) != nil || len(r.Terminals) == 0 {
		return nil
	}
	out := make([]terminalLine, 0, min(len(r.Terminals), maxTerminalLines))
	for _, m := range r.Terminals {
		if len(out) == maxTerminalLines {
			break
		}
		var l terminalLine
		var ok *bool
		var phase string
		for k, v := range m {
			var err error
			switch k {
			case "Terminal", "Name":
				if l.Terminal == "" {
					err = json.Unmarshal(v, &l.Terminal)
				}
			case "OK":
				var b bool
				if err = json.Unmarshal(v, &b); err == nil {
					ok = &b
				}
			case "Phase":
				err = json.Unmarshal(v, &phase)
			case "Error":
				err = json.Unmarshal(v, &l.Error)
			default:
				if l.Details == nil {
					l.Details = map[string]json.RawMessage{}
				}
				l.Details[k] = v
			}
			if err != nil {
				if l.Details == nil {
					l.Details = map[string]json.RawMessage{}
				}
				l.Details[k] = v
			}
		}
		switch {
		case phase != "":
			l.State = phase
		case ok != nil && *ok:
			l.State = "ok"
		case ok != nil && running && l.Error == "":
			l.State = "under way"
		case ok != nil:
			l.State = "failed"
		default:
			l.State = "?"
		}
		out = append(out, l)
	}
	return out
}

// detailText says a terminal's details in one line, keys sorted (the MAC left out).
func (l terminalLine) detailText() string {
	keys := make([]string, 0, len(l.Details))
	for k := range l.Details {
		if k != "MAC" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+strings.Trim(string(l.Details[k]), `"`))
	}
	return strings.Join(parts, " ")
}

// heartbeat decodes a pending activity's last heartbeat: an agent's report for the activities
// that wait for a terminal, a transfer's position for those that copy an image.
func heartbeat(activity string, details *commonpb.Payloads) (json.RawMessage, string) {
	if details == nil || len(details.Payloads) == 0 {
		return nil, ""
	}
	dc := converter.GetDefaultDataConverter()
	switch activity {
	case activities.NameWaitForAgent:
		var p activities.AgentProgress
		if dc.FromPayloads(details, &p) == nil {
			raw, _ := json.Marshal(p)
			s := string(p.Phase)
			if p.Total > 0 {
				s += fmt.Sprintf(" %.1f%% (%s / %s)", 100*float64(p.Done)/float64(p.Total), humanBytes(p.Done), humanBytes(p.Total))
			}
			return raw, s
		}
	case activities.NamePullFromPeer, activities.NamePullFromRelay, activities.NamePushToRelay:
		var p transfer.Progress
		if dc.FromPayloads(details, &p) == nil {
			raw, _ := json.Marshal(p)
			s := fmt.Sprintf("%d/%d chunks", p.Done, p.Total)
			if p.Total > 0 {
				s = fmt.Sprintf("%.1f%% (%s), %s moved", 100*float64(p.Done)/float64(p.Total), s, humanBytes(p.MovedBytes))
			}
			return raw, s
		}
	}
	var raw json.RawMessage
	if dc.FromPayloads(details, &raw) == nil {
		return raw, ""
	}
	return nil, ""
}

// progressLine says in one line where a running task is.
func (d *taskDetail) progressLine() string {
	var parts []string
	switch d.Type {
	case workflows.NameCaptureImage:
		var p workflows.CaptureProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			parts = append(parts, "capture of "+p.Name+": "+string(p.Phase))
		}
	case workflows.NameDeployTerminal, workflows.NameUpdateTerminal:
		var p workflows.TerminalProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			what := "deploy"
			if d.Type == workflows.NameUpdateTerminal {
				what = "update"
			}
			parts = append(parts, what+" of "+p.Name+": "+string(p.Phase))
		}
	case workflows.NameUpdateImage:
		var p workflows.UpdateProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			count := map[workflows.Phase]int{}
			decided := map[activities.Decision]int{}
			for _, t := range p.Terminals {
				count[t.Phase]++
				decided[t.Decision]++
			}
			s := "update: " + string(p.Phase)
			if len(p.Terminals) > 0 {
				s += fmt.Sprintf(" (%d terminals: %d done, %d failed, %d updating, %d queued", len(p.Terminals),
					count[workflows.PhaseDone], count[workflows.PhaseFailed], count[workflows.PhaseUpdating], count[workflows.PhaseQueued])
				if n := decided[activities.DecisionStop] + decided[activities.DecisionIncremental] + decided[activities.DecisionFull]; n > 0 {
					s += fmt.Sprintf("; %d stop, %d incremental, %d full", decided[activities.DecisionStop], decided[activities.DecisionIncremental], decided[activities.DecisionFull])
				}
				s += ")"
			}
			parts = append(parts, s)
		}
	case workflows.NameShareImage:
		var p workflows.ShareProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			s := "share: " + string(p.Phase)
			if p.Source != "" {
				s += " from " + p.Source
			}
			parts = append(parts, s)
		}
	case workflows.NameConfigureRegion:
		var p workflows.ConfigureProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			s := "config " + p.Key + " = " + p.Value + ": " + string(p.Phase)
			if p.Phase == workflows.PhaseApplying {
				s += " (waiting for the region)"
			}
			parts = append(parts, s)
		}
	case workflows.NamePowerTerminals:
		var p workflows.PowerProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			waiting := 0
			for _, t := range p.Terminals {
				if t.Outcome == "" {
					waiting++
				}
			}
			parts = append(parts, fmt.Sprintf("power %s: %s (%d terminals, %d waiting)", p.Action, p.Phase, len(p.Terminals), waiting))
		}
	case workflows.NameBootEnvRollout:
		var p workflows.BootEnvRolloutResult
		if json.Unmarshal(d.Progress, &p) == nil {
			parts = append(parts, "bootenv rollout "+shortID(p.Version)+": "+rolloutRegionsText(p.Regions))
		}
	case workflows.NameDeployImage:
		var p workflows.DeployProgress
		if json.Unmarshal(d.Progress, &p) == nil {
			count := map[workflows.Phase]int{}
			for _, t := range p.Terminals {
				count[t.Phase]++
			}
			s := "deploy: " + string(p.Phase)
			if len(p.Terminals) > 0 {
				s += fmt.Sprintf(" (%d terminals: %d done, %d failed, %d deploying, %d queued)",
					len(p.Terminals), count[workflows.PhaseDone], count[workflows.PhaseFailed], count[workflows.PhaseDeploying], count[workflows.PhaseQueued])
			}
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		parts = append(parts, d.Type+" "+strings.ToLower(d.Status))
	}
	for _, p := range d.Pending {
		if p.progress != "" {
			parts = append(parts, p.progress)
		}
	}
	var agents activities.AgentProgress
	reporting := 0
	for _, ch := range d.children {
		for _, p := range ch.Pending {
			var ap activities.AgentProgress
			switch {
			case p.Type == activities.NameWaitForAgent && json.Unmarshal(p.Progress, &ap) == nil && ap.Total > 0:
				agents.Done += ap.Done
				agents.Total += ap.Total
				reporting++
			case ch.Type == workflows.NameShareImage && p.progress != "":
				parts = append(parts, "share "+p.progress)
			}
		}
	}
	if reporting > 0 {
		parts = append(parts, fmt.Sprintf("%d terminal(s) reporting %.1f%% (%s / %s)", reporting,
			100*float64(agents.Done)/float64(agents.Total), humanBytes(agents.Done), humanBytes(agents.Total)))
	}
	return strings.Join(parts, "; ")
}

// resultSummary says in one line what a finished task did.
func resultSummary(typ string, raw json.RawMessage) string {
	switch typ {
	case workflows.NameCaptureImage:
		var r workflows.CaptureImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			return fmt.Sprintf("terminal %s captured as %s@%s (%s disk, %s stored)", r.TerminalRef, r.Image, short(r.Version), humanBytes(r.DiskSize), humanBytes(r.StoredBytes))
		}
	case workflows.NameShareImage:
		var r workflows.ShareImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			if r.Path == workflows.PathLocal {
				return fmt.Sprintf("version %s was already there", short(r.Version))
			}
			return fmt.Sprintf("version %s copied from %s by %s, %s moved", short(r.Version), r.Source, r.Path, humanBytes(r.MovedBytes))
		}
	case workflows.NameDeployImage:
		var r workflows.DeployImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			s := fmt.Sprintf("version %s written to %d of %d terminals", short(r.Version), len(r.Terminals)-r.Failed, len(r.Terminals))
			for _, t := range r.Terminals {
				if !t.OK {
					s += "; " + t.Name + " failed: " + t.Error
				}
			}
			return s
		}
	case workflows.NameConfigureRegion:
		var r workflows.ConfigureRegionResult
		if json.Unmarshal(raw, &r) == nil && r.Key != "" {
			return fmt.Sprintf("%s = %s (was %s), applied %s", r.Key, r.Value, dash(r.Previous), r.At.Local().Format(time.DateTime+" MST"))
		}
	case workflows.NamePowerTerminals:
		var r workflows.PowerTerminalsResult
		if json.Unmarshal(raw, &r) == nil && r.Action != "" {
			return powerSummary(r)
		}
	case workflows.NameDeployTerminal:
		var r workflows.TerminalOutcome
		if json.Unmarshal(raw, &r) == nil {
			return fmt.Sprintf("terminal %s: %d chunks written (%s), %d already right", r.Name, r.Written, humanBytes(r.WrittenBytes), r.Skipped)
		}
	case workflows.NameUpdateImage:
		var r workflows.UpdateImageResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			return updateSummary(r)
		}
	case workflows.NameUpdateTerminal:
		var r workflows.UpdateOutcome
		if json.Unmarshal(raw, &r) == nil {
			return fmt.Sprintf("terminal %s: %s (%s), %s fetched, %s written", r.Name, r.Decision, r.Reason, humanBytes(r.FetchedBytes), humanBytes(r.WrittenBytes))
		}
	case workflows.NameBootEnvRollout:
		var r workflows.BootEnvRolloutResult
		if json.Unmarshal(raw, &r) == nil && r.Version != "" {
			return fmt.Sprintf("bootenv %s (%s) is the in-memory OS of %s", shortID(r.Version), r.Name, rolloutRegionsText(r.Regions))
		}
	}
	return "done"
}

// rolloutRegionsText is a rollout's regions for people: "region-a done (canary a-pc1),
// region-b probing (canary b-pc2)".
func rolloutRegionsText(rs []workflows.RolloutRegion) string {
	var parts []string
	for _, r := range rs {
		s := r.Region + " " + r.Phase
		if r.Canary != "" {
			s += " (canary " + r.Canary + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
