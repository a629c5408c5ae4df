package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"tms/agentwire"
	"tms/manifest"
	"tms/state"
	"tms/store"
	"tms/transfer"
)

// Commander passes a command (reboot, poweroff) to a terminal's agent.
type Commander interface {
	Send(mac string, command agentwire.Command)
	// Connected reports whether the terminal's agent is listening for commands.
	Connected(mac string) bool
}

// Siblings are the region's other servers (the same region id and database, a store each) as
// this server's activities use them (package sibling).
type Siblings interface {
	// Command passes a command to a terminal's agent through them: an agent polls one server
	// for commands, and the worker sending it one may be another's. It reports whether a
	// sibling the agent polls took it.
	Command(ctx context.Context, mac string, command agentwire.Command) (bool, error)
	// First puts them before src, a share's source of version id: a version a sibling holds
	// comes from it, not over the WAN.
	First(src transfer.Source, id manifest.ID) transfer.Source
}

// Waker wakes a terminal that is off.
type Waker interface {
	Wake(ctx context.Context, mac string) error
}

// TerminalRef names a terminal of a region.
type TerminalRef struct {
	MAC      string
	Name     string
	DiskSize int64 // as its agent last reported; 0 if unknown
}

// ResolveInput names terminals: a group, or terminals by name or MAC.
type ResolveInput struct {
	Group     string
	Terminals []string
}

// ResolveResult lists the terminals, in a stable order.
type ResolveResult struct{ Terminals []TerminalRef }

// ResolveTerminals turns a group or a list of names and MACs into terminals. An unknown group or
// terminal, a terminal that is not enrolled and an empty group are errors an admin must fix.
func (r *Region) ResolveTerminals(ctx context.Context, in ResolveInput) (ResolveResult, error) {
	var res ResolveResult
	var ts []state.Terminal
	switch {
	case in.Group != "" && len(in.Terminals) > 0:
		return res, ErrBadInput.New("name a group or terminals, not both", nil)
	case in.Group != "":
		var err error
		ts, err = r.Inventory.Members(ctx, in.Group)
		if errors.Is(err, store.ErrNotFound) {
			return res, ErrUnknownGroup.New(fmt.Sprintf("region %s has no group %s", r.ID, in.Group), err)
		}
		if err != nil {
			return res, err
		}
		if len(ts) == 0 {
			return res, ErrEmptyGroup.New(fmt.Sprintf("group %s of region %s has no terminals", in.Group, r.ID), nil)
		}
	case len(in.Terminals) > 0:
		seen := map[string]bool{}
		for _, name := range in.Terminals {
			t, err := r.terminal(ctx, name)
			if err != nil {
				return res, err
			}
			if !seen[t.MAC] {
				seen[t.MAC] = true
				ts = append(ts, t)
			}
		}
	default:
		return res, ErrBadInput.New("name a group or at least one terminal", nil)
	}
	for _, t := range ts {
		res.Terminals = append(res.Terminals, TerminalRef{MAC: t.MAC, Name: t.Name, DiskSize: t.DiskSize})
	}
	return res, nil
}

func (r *Region) terminal(ctx context.Context, name string) (state.Terminal, error) {
	t, err := r.Inventory.Terminal(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return t, ErrUnknownTerminal.New(fmt.Sprintf("region %s has no terminal %s", r.ID, name), err)
	}
	if err != nil {
		return t, err
	}
	if !t.Enrolled {
		return t, ErrNotEnrolled.New(fmt.Sprintf("terminal %s of region %s is not enrolled", name, r.ID), nil)
	}
	return t, nil
}

// TaskInput sets up one terminal's capture, deploy or update.
type TaskInput struct {
	Task string // the terminal workflow's id
	// TerminalRef names the terminal: its name or its MAC.
	TerminalRef string `json:"Terminal"`
	Kind        agentwire.Kind
	Image       string // capture: the image name the new version is published under
	Version     string // deploy, update: the version id written
	// Base is the version an update's terminal holds (DecideUpdate): the agent writes the
	// chunks that differ between it and Version.
	Base string `json:",omitempty"`
	// Expires bounds how long the boot action stands if nothing finishes it.
	Expires time.Time
	// Writers is how many terminals the calling deploy or update writes Version at once (0:
	// not said): with more than one the agent joins the region's swarm for it.
	Writers int `json:",omitempty"`
}

// PrepareTask records the task and sets the terminal's next network boot to it. The agent's
// token is minted when the terminal boots, so no secret passes through workflow histories.
func (r *Region) PrepareTask(ctx context.Context, in TaskInput) (TerminalRef, error) {
	if in.Kind == agentwire.KindDeploy && in.Version == "" {
		// Workflows before Version existed passed a deploy's version id as Image.
		in.Version, in.Image = in.Image, ""
	}
	t, err := r.terminal(ctx, in.TerminalRef)
	if err != nil {
		return TerminalRef{}, err
	}
	var held []manifest.ID // the versions this task holds
	switch in.Kind {
	case agentwire.KindCapture:
		if err := manifest.ValidateDiskName(in.Image); err != nil {
			return TerminalRef{}, ErrBadImage.New(err.Error(), err)
		}
	case agentwire.KindDeploy, agentwire.KindUpdate:
		// A version still arriving will do: its manifest is checked and signed, and the agent
		// API serves its chunks as they come (arriving.go).
		id, v, arriving, err := r.taskVersion(ctx, in.Version)
		if err != nil {
			return TerminalRef{}, err
		}
		var base manifest.ID
		if in.Kind == agentwire.KindUpdate {
			if base, err = r.updateBase(ctx, in.Base, v); err != nil {
				return TerminalRef{}, err
			}
			if err := r.stillHolds(ctx, t, base, in.Task); err != nil {
				return TerminalRef{}, err
			}
		} else if in.Base != "" {
			return TerminalRef{}, ErrBadInput.New("a deploy writes the whole version: it names no base version", nil)
		}
		if err := r.checkSigned(ctx, v); err != nil {
			return TerminalRef{}, err
		}
		if manifest.IsBootEnv(v.Manifest.Meta.Name) {
			return TerminalRef{}, ErrBadImage.New(fmt.Sprintf("version %s is the in-memory OS %s, not a disk image: roll it out with tms bootenv rollout", id.Short(), v.Manifest.Meta.Name), nil)
		}
		if t.DiskSize > 0 && v.Manifest.DiskSize > t.DiskSize {
			return TerminalRef{}, ErrDoesNotFit.New(
				fmt.Sprintf("image needs a disk of %d bytes; terminal %s has %d", v.Manifest.DiskSize, terminalName(t), t.DiskSize), nil)
		}
		// In use means kept: the version stays in the store for as long as a terminal may boot
		// into this deploy (image rm and gc refuse it, naming the task).
		hold := r.holdForTask
		if arriving {
			hold = r.holdArriving
		}
		if err := hold(ctx, in.Task, id, in.Expires); err != nil {
			return TerminalRef{}, err
		}
		held = append(held, id)
		if !base.IsZero() {
			// The update's agent reads the base's manifest: it stays too.
			if err := r.holdForTask(ctx, in.Task, base, in.Expires); err != nil {
				_ = r.Store.Release(context.WithoutCancel(ctx), id, in.Task)
				return TerminalRef{}, err
			}
			held = append(held, base)
		}
	case agentwire.KindProbe:
		// The canary boots this version: this server serves it from now on (the others of
		// the region when the terminal asks them).
		s, err := r.materialize(ctx, in.Version)
		if err != nil {
			return TerminalRef{}, err
		}
		in.Version, in.Image = s.Version, ""
	default:
		return TerminalRef{}, ErrBadInput.New(fmt.Sprintf("task kind %q is not capture, deploy, update or probe", in.Kind), nil)
	}
	if err := r.startTask(ctx, t, in); err != nil {
		for _, h := range held {
			// A hold left behind by a failed release lapses at in.Expires.
			_ = r.Store.Release(context.WithoutCancel(ctx), h, in.Task)
		}
		return TerminalRef{}, err
	}
	return TerminalRef{MAC: t.MAC, Name: t.Name, DiskSize: t.DiskSize}, nil
}

// startTask records the task and sets the terminal's next network boot to it.
func (r *Region) startTask(ctx context.Context, t state.Terminal, in TaskInput) error {
	if _, err := r.Inventory.StartTask(ctx, state.Task{ID: in.Task, MAC: t.MAC, Kind: in.Kind, Image: in.Image, Version: in.Version, Base: in.Base, Writers: in.Writers}, r.now()); err != nil {
		if errors.Is(err, state.ErrConflict) {
			return ErrConflict.New(conflictMessage(t, err), err)
		}
		return err
	}
	return r.Inventory.SetBootAction(ctx, t.MAC, state.BootAction{Action: agentwire.Action(in.Kind), Task: in.Task, Image: in.Image, Version: in.Version, Expires: in.Expires})
}

// conflictMessage says why a terminal's task could not start: the terminal is busy with
// another task (named as `tms task` names it), or the task's id is taken.
func conflictMessage(t state.Terminal, err error) string {
	var busy *state.BusyError
	if !errors.As(err, &busy) {
		return err.Error()
	}
	other := busy.Task // WORKFLOW-ID@RUN-ID; `tms task` names the workflow id
	if i := strings.LastIndexByte(other, '@'); i > 0 {
		other = other[:i]
	}
	return fmt.Sprintf("terminal %s is busy with task %s (%s, started %s); this task did not touch it",
		terminalName(t), other, busy.Kind, busy.Since.Format("2006-01-02 15:04:05 MST"))
}

func terminalName(t state.Terminal) string {
	if t.Name != "" {
		return t.Name
	}
	return t.MAC
}

// PowerInput asks for a terminal to be rebooted or powered off.
type PowerInput struct {
	MAC     string
	Command agentwire.Command
}

// PowerTerminal passes a power command to the terminal's agent. A terminal that is off does not
// hear it; waking it is the boot service's Wake-on-LAN.
func (r *Region) PowerTerminal(ctx context.Context, in PowerInput) error {
	if in.Command != agentwire.CommandReboot && in.Command != agentwire.CommandPoweroff {
		return ErrBadInput.New(fmt.Sprintf("power command %q is not reboot or poweroff", in.Command), nil)
	}
	if _, err := state.NormalizeMAC(in.MAC); err != nil {
		return ErrBadInput.New(err.Error(), err)
	}
	if r.Agents != nil && r.Agents.Connected(in.MAC) {
		r.Agents.Send(in.MAC, in.Command)
		return nil
	}
	// The agent may poll another of the region's servers: the one that hears it passes the
	// command on, and no copy waits here for a later poll (it would reboot the terminal twice).
	if r.Siblings != nil {
		delivered, err := r.Siblings.Command(ctx, in.MAC, in.Command)
		if err != nil {
			return err
		}
		if delivered {
			return nil
		}
	}
	if r.Agents != nil {
		r.Agents.Send(in.MAC, in.Command) // for a poll that comes within agentapi.CommandTTL
	}
	// Nobody listens: the terminal is off, or runs an OS without the agent. Waking it makes it
	// boot from the network, which is what a reboot is for here; a terminal that is on without
	// an agent needs someone to restart it.
	if in.Command == agentwire.CommandReboot && r.Waker != nil {
		if err := r.Waker.Wake(ctx, in.MAC); err != nil {
			return fmt.Errorf("waking terminal %s: %w", in.MAC, err)
		}
	}
	return nil
}

// WaitInput names the task whose agent is awaited.
type WaitInput struct{ Task string }

// AgentResult is what an agent's finished task left: for a capture the new version, for a
// deploy what was written. It is the protocol's result, as the region records it.
type AgentResult = agentwire.Result

// WaitForAgent waits for the terminal's agent to finish the task. It completes asynchronously:
// the region's agent API completes it, and heartbeats it with the agent's progress, through the
// task token recorded here. If the heartbeats stop (the terminal is off, its agent was killed)
// the activity times out and its retry waits again, so a restarted agent carries on.
func (r *Region) WaitForAgent(ctx context.Context, in WaitInput) (AgentResult, error) {
	token := activity.GetInfo(ctx).TaskToken
	t, err := r.Inventory.SetWaiter(ctx, in.Task, token, r.now())
	if errors.Is(err, store.ErrNotFound) {
		return AgentResult{}, ErrUnknownTask.New("no task "+in.Task+" in region "+r.ID, err)
	}
	if err != nil {
		return AgentResult{}, err
	}
	if t.Finished() {
		return TaskOutcome(t)
	}
	return AgentResult{}, activity.ErrResultPending
}

// TaskOutcome is a finished task as WaitForAgent's result or error.
func TaskOutcome(t state.Task) (AgentResult, error) {
	var res AgentResult
	switch t.State {
	case state.TaskDone:
		if t.Result != "" {
			if err := json.Unmarshal([]byte(t.Result), &res); err != nil {
				return res, ErrAgentFailed.New("task "+t.ID+": unreadable result: "+err.Error(), err)
			}
		}
		return res, nil
	case state.TaskCanceled:
		return res, ErrAgentFailed.New("task "+t.ID+" was canceled", nil)
	default:
		msg := t.Error
		if msg == "" {
			msg = "the agent gave up"
		}
		return res, ErrAgentFailed.New(msg, nil)
	}
}

// FinishInput ends a terminal's task.
type FinishInput struct {
	Task  string
	MAC   string
	State state.TaskState // state.TaskDone, TaskFailed or TaskCanceled
	Error string
	// Version is what the terminal's disk now holds (a deploy, or the capture of it).
	Version string
}

// FinishTask ends the task (if the agent has not), records the version the terminal's disk
// holds, and sets its next boot back to its own disk unless another task has taken it over.
func (r *Region) FinishTask(ctx context.Context, in FinishInput) error {
	now := r.now()
	t, _, err := r.Inventory.FinishTask(ctx, in.Task, in.State, "", in.Error, now)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if in.Version != "" && in.State == state.TaskDone {
		id, err := manifest.ParseID(in.Version)
		if err != nil {
			return ErrBadVersion.New(err.Error(), err)
		}
		if err := r.Inventory.SetVersion(ctx, in.MAC, id); err != nil {
			return err
		}
	}
	a, err := r.Inventory.BootAction(ctx, in.MAC, now)
	if err != nil {
		return err
	}
	if a.Task == in.Task {
		if err := r.Inventory.ClearBootAction(ctx, in.MAC); err != nil {
			return err
		}
	}
	// A deploy or update held the versions it recorded (PrepareTask); a task never recorded
	// holds nothing.
	if !t.Kind.Writes() {
		return nil
	}
	for _, v := range []string{t.Version, t.Base} {
		if v == "" {
			continue
		}
		id, err := manifest.ParseID(v)
		if err != nil {
			return ErrBadVersion.New(err.Error(), err)
		}
		if err := r.Store.Release(ctx, id, t.ID); err != nil {
			return err
		}
	}
	return nil
}

// VersionInput names a version in a region's store.
type VersionInput struct{ Version string }

// VersionInfo describes a version as the catalog records it.
type VersionInfo struct {
	Version     string
	Name        string
	Parent      string
	Created     time.Time
	DiskSize    int64
	ChunkSize   int64
	StoredBytes int64
}

// DescribeVersion reads a version's manifest and stats from the region's store.
func (r *Region) DescribeVersion(ctx context.Context, in VersionInput) (VersionInfo, error) {
	id, v, err := r.heldVersion(ctx, in.Version, r.Store)
	if err != nil {
		return VersionInfo{}, err
	}
	st, err := r.Store.GetStats(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return VersionInfo{}, err
	}
	m := v.Manifest
	info := VersionInfo{Version: id.String(), Name: m.Meta.Name, Created: m.Meta.Created, DiskSize: m.DiskSize, ChunkSize: m.ChunkSize, StoredBytes: st.StoredBytes}
	if !m.Parent.IsZero() {
		info.Parent = m.Parent.String()
	}
	return info, nil
}

// TagInput points a tag of an image in the region's store at a version the region holds.
type TagInput struct {
	Image   string
	Tag     string
	Version string
}

// TagVersion moves an image's tag to a version of that image. The capture workflow tags a
// captured version only once its terminal task is done: the agent API keeps what an agent
// uploads, but only a task that ended well names what NAME:latest is.
func (r *Region) TagVersion(ctx context.Context, in TagInput) error {
	if err := manifest.ValidateName(in.Image); err != nil {
		return ErrBadImage.New(err.Error(), err)
	}
	id, v, err := r.heldVersion(ctx, in.Version, r.Store)
	if err != nil {
		return err
	}
	if v.Manifest.Meta.Name != in.Image {
		return ErrBadInput.New(fmt.Sprintf("version %s is of image %s, not %s", id.Short(), v.Manifest.Meta.Name, in.Image), nil)
	}
	return r.Store.SetTag(ctx, in.Image, in.Tag, id)
}

func (r *Region) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
