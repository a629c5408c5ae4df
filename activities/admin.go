package activities

import (
	"context"
	"errors"
	"fmt"
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
)

// AdminInput is one admin request to a region's inventory.
type AdminInput struct {
	Op        string
	Group     string
	Terminals []string
	MAC       string
	Name      string
	Limit     int
	TokenHash string        `json:",omitempty"`
	TTL       time.Duration `json:",omitempty"`
	Rekey     bool          `json:",omitempty"`
}

// TerminalInfo is a terminal as listings show it.
type TerminalInfo struct {
	MAC        string
	Name       string
	Enrolled   bool
	DiskSize   int64
	Version    string // what its disk holds, as far as the region knows
	LastIP     string
	LastSeen   time.Time
	BootAction agentwire.Action
	Task       string
}

// GroupInfo is a group with its members' names.
type GroupInfo struct {
	Name    string
	Members []string
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
				Version: t.Version.String(), LastIP: t.LastIP, LastSeen: t.LastSeen, BootAction: a.Action, Task: a.Task})
		}
	case OpGroups:
		names, err := r.Inventory.Groups(ctx)
		if err != nil {
			return res, err
		}
		for _, n := range names {
			ms, err := r.Inventory.Members(ctx, n)
			if err != nil {
				return res, err
			}
			g := GroupInfo{Name: n, Members: []string{}}
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
			// The rest are the admin's input: a malformed MAC or name.
			return res, ErrBadInput.New(err.Error(), err)
		}
	case OpGroupCreate:
		if err := r.Inventory.CreateGroup(ctx, in.Group); err != nil {
			if errors.Is(err, state.ErrConflict) {
				return bad(err)
			}
			return res, ErrBadInput.New(err.Error(), err)
		}
	case OpGroupAdd:
		for _, t := range in.Terminals {
			if _, err := r.terminal(ctx, t); err != nil {
				return res, err
			}
		}
		if err := r.Inventory.AddToGroup(ctx, in.Group, in.Terminals...); err != nil {
			return bad(err)
		}
	case OpEnrollToken:
		return res, r.addEnrollToken(ctx, in)
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
