package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"tms/agentwire"
	"tms/state"
	"tms/store"
)

// Region admin operations, the Op of AdminInput.
const (
	OpTerminals   = "terminals"    // list terminals
	OpGroups      = "groups"       // list groups and their members
	OpTasks       = "tasks"        // list recent terminal tasks
	OpEnroll      = "enroll"       // enroll MAC as Name
	OpGroupCreate = "group-create" // create Group
	OpGroupAdd    = "group-add"    // add Terminals to Group
	OpGroupLabel  = "group-label"  // change Group's location labels: Clear, then Labels set, LabelsRemove removed

	OpSeen         = "seen"         // list terminals seen but not enrolled
	OpEnrollSeen   = "enroll-seen"  // enroll the seen terminals into Group, named by Pattern, at most Limit
	OpTerminalRm   = "terminal-rm"  // remove Terminals
	OpRename       = "rename"       // rename Terminals[0] to Name
	OpMove         = "move"         // move Terminals into Group, out of every other group
	OpGroupRm      = "group-rm"     // remove Group (with members only if Force)
	OpGroupTakeOut = "group-remove" // take Terminals out of Group
	OpImport       = "import"       // enroll the terminals of the roster CSV (DryRun: only report)

	OpStatus   = "status"   // the region's status in detail (Status), for tms status --region
	OpSettings = "settings" // list the region's run-time settings: effective value and source
	OpImages   = "images"   // list the versions the region's store holds (Images, Store)
	OpPin      = "pin"      // pin Image (NAME, NAME:TAG or NAME@VERSION) in the region's store
	OpUnpin    = "unpin"    // unpin Image
)

// readOps are the ops that change nothing: a viewer may send them (workflows.UpdateRead).
var readOps = []string{OpTerminals, OpGroups, OpTasks, OpSeen, OpStatus, OpSettings, OpImages}

// changeOps are the ops that change the region's inventory (workflows.UpdateChange).
var changeOps = []string{OpEnroll, OpGroupCreate, OpGroupAdd, OpEnrollSeen, OpTerminalRm, OpRename, OpMove, OpGroupRm,
	OpGroupTakeOut, OpImport, OpEnrollToken, OpPin, OpUnpin, OpGroupLabel}

// ReadOp tells whether op only reads the region's inventory.
func ReadOp(op string) bool { return slices.Contains(readOps, op) }

// KnownOp tells whether op is a region admin op at all.
func KnownOp(op string) bool { return ReadOp(op) || slices.Contains(changeOps, op) }

// AdminInput is one admin request to a region's inventory.
type AdminInput struct {
	Op        string
	Group     string
	Terminals []string
	MAC       string
	Name      string
	Limit     int
	Force     bool
	Pattern   string // enroll-seen: a terminal name pattern (state.ParseNamePattern)
	CSV       []byte // import: the roster, at most state.MaxRosterBytes
	DryRun    bool
	TokenHash string        `json:",omitempty"`
	TTL       time.Duration `json:",omitempty"`
	Rekey     bool          `json:",omitempty"`
	// Image is what pin and unpin name: NAME, NAME:TAG or NAME@VERSION in the region's store.
	Image string `json:",omitempty"`
	// By is who asks, for the pin's record (may be empty).
	By string `json:",omitempty"`
	// Labels, LabelsRemove and Clear change Group's location labels (group-label).
	Labels       map[string]string `json:",omitempty"`
	LabelsRemove []string          `json:",omitempty"`
	Clear        bool              `json:",omitempty"`
}

// TerminalInfo is a terminal as listings show it.
type TerminalInfo struct {
	MAC      string
	Name     string
	Enrolled bool
	DiskSize int64
	Version  string // what its disk holds, as far as the region knows
	// VersionNote says why Version is unknown, where the region knows why.
	VersionNote string `json:",omitempty"`
	LastIP      string
	LastSeen    time.Time
	BootAction  agentwire.Action
	Task        string
}

// GroupInfo is a group with its members' names and its location labels.
type GroupInfo struct {
	Name    string
	Members []string
	Labels  map[string]string `json:",omitempty"`
}

// TaskInfo is a terminal task as listings show it.
type TaskInfo struct {
	ID, MAC  string
	Kind     agentwire.Kind
	Image    string // capture: the image name
	Version  string // deploy: the version id
	State    state.TaskState
	Error    string
	Progress AgentProgress
	Updated  time.Time
}

// AdminResult carries what an admin request lists.
type AdminResult struct {
	Terminals []TerminalInfo
	Groups    []GroupInfo
	Tasks     []TaskInfo
	Seen      []SeenInfo
	// Enrolled, Removed: the terminals enroll-seen enrolled and terminal-rm removed.
	Enrolled     []TerminalInfo
	Removed      []TerminalInfo
	CreatedGroup bool // enroll-seen created Group
	Members      int  // group-rm: how many members the removed group had
	Import       state.ImportReport
	// Status is the region's status in detail (OpStatus).
	Status RegionStatus
	// Settings: the region's run-time settings (OpSettings).
	Settings []SettingInfo `json:",omitempty"`
	// Images are the versions the store holds (OpImages, at most MaxReportedImages of
	// ImageCount), and the version pin or unpin resolved Image to; Store how full it is.
	Images     []ImageDescriptor `json:",omitempty"`
	ImageCount int               `json:",omitempty"`
	Store      *StoreInfo        `json:",omitempty"`
	// Changed is false when pin found the version pinned already or unpin found it unpinned.
	Changed bool `json:",omitempty"`
}

// SeenInfo is a terminal seen on the network and not enrolled.
type SeenInfo struct {
	MAC       string
	LastIP    string
	FirstSeen time.Time
	LastSeen  time.Time
}

// Admin lists or edits the region's inventory. Mistakes (an unknown terminal or group, a name
// taken) are non-retryable errors that say what to fix.
func (r *Region) Admin(ctx context.Context, in AdminInput) (AdminResult, error) {
	var res AdminResult
	bad := func(err error) (AdminResult, error) {
		switch {
		case errors.Is(err, store.ErrNotFound):
			return res, ErrNotFound.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
		case errors.Is(err, state.ErrConflict):
			return res, ErrConflict.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
		}
		return res, err
	}
	switch in.Op {
	case OpTerminals:
		ts, err := r.Inventory.Terminals(ctx)
		if err != nil {
			return res, err
		}
		now := r.now()
		for _, t := range ts {
			a, err := r.Inventory.BootAction(ctx, t.MAC, now)
			if err != nil {
				return res, err
			}
			res.Terminals = append(res.Terminals, TerminalInfo{MAC: t.MAC, Name: t.Name, Enrolled: t.Enrolled, DiskSize: t.DiskSize,
				Version: t.Version.String(), VersionNote: t.VersionNote, LastIP: t.LastIP, LastSeen: t.LastSeen, BootAction: a.Action, Task: a.Task})
		}
	case OpGroups:
		names, err := r.Inventory.Groups(ctx)
		if err != nil {
			return res, err
		}
		labels, err := r.Inventory.GroupLabels(ctx)
		if err != nil {
			return res, err
		}
		for _, n := range names {
			ms, err := r.Inventory.Members(ctx, n)
			if err != nil {
				return res, err
			}
			g := GroupInfo{Name: n, Members: []string{}, Labels: labels[n]}
			for _, m := range ms {
				g.Members = append(g.Members, m.Name)
			}
			res.Groups = append(res.Groups, g)
		}
	case OpTasks:
		ts, err := r.Inventory.Tasks(ctx, in.MAC, in.Limit)
		if err != nil {
			return bad(err)
		}
		for _, t := range ts {
			res.Tasks = append(res.Tasks, taskInfo(t))
		}
	case OpEnroll:
		if err := r.Inventory.Enroll(ctx, in.MAC, in.Name); err != nil {
			if errors.Is(err, state.ErrConflict) || errors.Is(err, store.ErrNotFound) {
				return bad(err)
			}
			if databaseDown(err) {
				return res, err // retried: PostgreSQL may be back by then
			}
			// The rest are the admin's input: a malformed MAC or name.
			return res, ErrBadInput.New(err.Error(), err)
		}
	case OpGroupCreate:
		if err := r.Inventory.CreateGroup(ctx, in.Group); err != nil {
			if errors.Is(err, state.ErrConflict) {
				return bad(err)
			}
			if databaseDown(err) {
				return res, err
			}
			return res, ErrBadInput.New(err.Error(), err)
		}
	case OpGroupLabel:
		labels, err := r.Inventory.SetGroupLabels(ctx, in.Group, state.LabelChange{Set: in.Labels, Remove: in.LabelsRemove, Clear: in.Clear})
		if err != nil {
			if errors.Is(err, state.ErrBadLabels) {
				return res, ErrBadInput.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
			}
			return bad(err)
		}
		res.Groups = []GroupInfo{{Name: in.Group, Labels: labels}}
	case OpGroupAdd:
		for _, t := range in.Terminals {
			if _, err := r.terminal(ctx, t); err != nil {
				return res, err
			}
		}
		if err := r.Inventory.AddToGroup(ctx, in.Group, in.Terminals...); err != nil {
			return bad(err)
		}
	case OpSeen, OpEnrollSeen, OpTerminalRm, OpRename, OpMove, OpGroupRm, OpGroupTakeOut, OpImport:
		var err error
		if res, err = r.keepInventory(ctx, in); err != nil {
			return res, r.adminError(err)
		}
	case OpEnrollToken:
		return res, r.addEnrollToken(ctx, in)
	case OpSettings:
		var err error
		res.Settings, err = r.settingsInfo()
		return res, err
	case OpImages, OpPin, OpUnpin:
		return r.storeAdmin(ctx, in)
	default:
		return res, ErrBadInput.New(fmt.Sprintf("unknown admin operation %q", in.Op), nil)
	}
	return res, nil
}

func taskInfo(t state.Task) TaskInfo {
	ti := TaskInfo{ID: t.ID, MAC: t.MAC, Kind: t.Kind, Image: t.Image, Version: t.Version, State: t.State, Error: t.Error, Updated: t.Updated}
	if t.Progress != "" {
		_ = jsonUnmarshal(t.Progress, &ti.Progress) // a garbled report shows as no progress
	}
	return ti
}

// keepInventory does the admin operations that keep a lab's inventory: enrolling what was
// seen, importing rosters, renaming, moving and removing.
func (r *Region) keepInventory(ctx context.Context, in AdminInput) (AdminResult, error) {
	var res AdminResult
	need := func(what string, n int) error {
		if len(in.Terminals) < n {
			return fmt.Errorf("%s needs %s: %w", in.Op, what, state.ErrInvalid)
		}
		return nil
	}
	switch in.Op {
	case OpSeen:
		seen, err := r.Inventory.SeenTerminals(ctx)
		if err != nil {
			return res, err
		}
		for _, s := range seen {
			res.Seen = append(res.Seen, SeenInfo{MAC: s.MAC, LastIP: s.LastIP, FirstSeen: s.FirstSeen, LastSeen: s.LastSeen})
		}
	case OpEnrollSeen:
		p, err := state.ParseNamePattern(in.Pattern)
		if err != nil {
			return res, err
		}
		got, err := r.Inventory.EnrollSeen(ctx, in.Group, p, in.Limit)
		if err != nil {
			return res, err
		}
		res.CreatedGroup = got.CreatedGroup
		for _, t := range got.Enrolled {
			res.Enrolled = append(res.Enrolled, TerminalInfo{MAC: t.MAC, Name: t.Name, Enrolled: true, LastIP: t.LastIP, LastSeen: t.LastSeen})
		}
	case OpTerminalRm:
		if err := need("at least one terminal", 1); err != nil {
			return res, err
		}
		gone, err := r.Inventory.RemoveTerminals(ctx, r.now(), in.Terminals...)
		if err != nil {
			return res, err
		}
		for _, t := range gone {
			res.Removed = append(res.Removed, TerminalInfo{MAC: t.MAC, Name: t.Name, Enrolled: t.Enrolled, LastIP: t.LastIP, LastSeen: t.LastSeen})
		}
	case OpRename:
		if len(in.Terminals) != 1 {
			return res, fmt.Errorf("rename takes one terminal, got %d: %w", len(in.Terminals), state.ErrInvalid)
		}
		if _, err := r.Inventory.RenameTerminal(ctx, in.Terminals[0], in.Name); err != nil {
			return res, err
		}
	case OpMove:
		if err := need("at least one terminal", 1); err != nil {
			return res, err
		}
		if err := r.Inventory.MoveTerminals(ctx, in.Group, in.Terminals...); err != nil {
			return res, err
		}
	case OpGroupRm:
		n, err := r.Inventory.RemoveGroup(ctx, in.Group, in.Force)
		res.Members = n
		if errors.Is(err, state.ErrConflict) {
			return res, fmt.Errorf("%w; its terminals stay enrolled if it is removed anyway (--force)", err)
		}
		if err != nil {
			return res, err
		}
	case OpGroupTakeOut:
		if err := need("at least one terminal", 1); err != nil {
			return res, err
		}
		if err := r.Inventory.RemoveFromGroup(ctx, in.Group, in.Terminals...); err != nil {
			return res, err
		}
	case OpImport:
		lines, err := state.ParseRoster(in.CSV)
		if err != nil {
			return res, err
		}
		if res.Import, err = r.Inventory.Import(ctx, lines, in.DryRun); err != nil {
			return res, err
		}
	}
	return res, nil
}

// databaseDown tells whether err is the region's database being unreachable (PostgreSQL
// stopped or cut off): not the request's fault, and a retry may succeed.
func databaseDown(err error) bool {
	var down *state.UnreachableError
	return errors.As(err, &down)
}

// adminError turns an inventory error into the application error the CLI shows: the admin's
// mistakes are not retried, anything else (the database) is.
func (r *Region) adminError(err error) error {
	msg := fmt.Sprintf("region %s: %v", r.ID, err)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ErrNotFound.New(msg, err)
	case errors.Is(err, state.ErrConflict):
		return ErrConflict.New(msg, err)
	case errors.Is(err, state.ErrInvalid):
		return ErrBadInput.New(msg, err)
	}
	return err
}
