package activities

import (
	"context"
	"fmt"
	"slices"
	"time"

	"tms/state"
)

// TerminalOnlineWindow is how recently a terminal must have been seen (a DHCP request, its agent
// service's poll, the in-memory OS's calls) to count as online. The agent service polls for
// commands at least every 30 seconds.
const TerminalOnlineWindow = 2 * time.Minute

// RegionSummary is what a region reports to central every report interval: enough for one
// line of `tms status`.
type RegionSummary struct {
	Region string
	// Version is the tms release the region's server runs.
	Version string
	// Capacity and Used are the region's store's bytes: what it may hold (the smaller of its
	// filesystem and region.store_capacity) and what it uses; 0 when unknown.
	Capacity, Used int64
	// HighWater and LowWater are the store's marks, fractions of Capacity.
	HighWater, LowWater float64 `json:",omitempty"`
	// Images are the versions the store holds, oldest stored first, at most
	// MaxReportedImages; ImageCount counts them all. Central keeps the last report's list:
	// versions that leave it leave central's catalog of locations.
	Images     []ImageDescriptor `json:",omitempty"`
	ImageCount int               `json:",omitempty"`
	// ImagesListed tells that Images was taken: a region that could not describe its store
	// (a manifest it cannot read) reports without it, and central then forgets nothing.
	ImagesListed bool `json:",omitempty"`
	// BootEnv is the region's current version of the in-memory OS (tms bootenv rollout);
	// empty: none, its terminals boot the plain boot directory.
	BootEnv string `json:",omitempty"`
	// Terminals counts the enrolled terminals; Online those seen within TerminalOnlineWindow;
	// Busy those in a task.
	Terminals, Online, Busy int
	// Servers are the region's servers (several `tms region` processes may serve one region),
	// by id, at most state.MaxServersListed; empty from a region whose tms predates them.
	Servers []ServerStatus `json:",omitempty"`
	// Interval is how often the region reports: central calls it offline after three missed
	// reports.
	Interval time.Duration
	// At is when the region made the report (its clock); central stamps Received.
	At       time.Time
	Received time.Time `json:",omitempty"`
}

// ServerStatus is one of a region's servers as its registry has it.
type ServerStatus struct {
	ID       string
	Labels   map[string]string `json:",omitempty"`
	Endpoint string
	BootAddr string `json:",omitempty"`
	DHCP     string `json:",omitempty"` // its boot service's DHCP mode; empty: no boot service
	Version  string // the tms release it runs
	BootEnv  string // the boot environment version it serves; empty: unknown
	Started  time.Time
	LastSeen time.Time
	// Healthy: it heartbeated within three heartbeats when the report was made.
	Healthy bool
}

// GroupStatus is one group of a region's status.
type GroupStatus struct {
	Name string
	// Labels are the group's location labels (room=a): its terminals boot from the servers
	// whose labels include them.
	Labels map[string]string `json:",omitempty"`
	// Target is the version the group's latest deploy or update wrote (empty: none yet).
	Target                          string
	Members, Online, OnTarget, Busy int
}

// TerminalStatus is one enrolled terminal of a region's status.
type TerminalStatus struct {
	Name, MAC string
	Groups    []string
	Online    bool
	LastSeen  time.Time
	// Version is what its disk holds as far as the region knows; VersionNote says why it is
	// unknown, where known.
	Version, VersionNote string
	// Target is the target of its first group that has one; OnTarget tells whether Version
	// is it.
	Target   string
	OnTarget bool
	// Task is the task the terminal is in (its workflow id), if any.
	Task string
}

// RegionStatus is a region's status in detail: `tms status --region R`.
type RegionStatus struct {
	Summary   RegionSummary
	Groups    []GroupStatus
	Terminals []TerminalStatus
}

// StatusInput asks for a region's status; empty for now, a struct so fields can be added.
type StatusInput struct{}

// Status reports the region's status: its store's use, its groups and terminals, which are
// online and in a task, and whether each holds its group's target.
func (r *Region) Status(ctx context.Context, _ StatusInput) (RegionStatus, error) {
	now := r.now()
	st := RegionStatus{Summary: RegionSummary{Region: r.ID, Version: r.Version, Interval: r.ReportInterval, At: now}}
	if r.Inventory == nil {
		return st, fmt.Errorf("region %s has no inventory to take its status from", r.ID)
	}
	sum := &st.Summary
	if r.Usage != nil || r.Store != nil {
		si, err := r.storeInfo(ctx)
		if err != nil {
			return st, err
		}
		sum.Used, sum.Capacity, sum.HighWater, sum.LowWater = si.Used, si.Capacity, si.HighWater, si.LowWater
	}
	if r.Store != nil {
		// A store that cannot be described (a manifest that cannot be read: tms store verify
		// says which) must not keep the region from reporting the rest.
		var err error
		if sum.Images, sum.ImageCount, err = r.describeStore(ctx, sum.Used, false); err != nil {
			r.logger(ctx).Warn("the region's report leaves out its images: the store could not be described", "err", err)
			sum.Images, sum.ImageCount = nil, 0
		} else {
			sum.ImagesListed = true
		}
	}
	cur, err := r.CurrentBootEnv(ctx)
	if err != nil {
		return st, err
	}
	sum.BootEnv = cur.Version
	ts, err := r.Inventory.Terminals(ctx)
	if err != nil {
		return st, err
	}
	targets, err := r.Inventory.GroupTargets(ctx)
	if err != nil {
		return st, err
	}
	groupsOf, err := r.Inventory.GroupsOf(ctx)
	if err != nil {
		return st, err
	}
	names, err := r.Inventory.Groups(ctx)
	if err != nil {
		return st, err
	}
	labels, err := r.Inventory.GroupLabels(ctx)
	if err != nil {
		return st, err
	}
	if sum.Servers, err = r.servers(ctx, now); err != nil {
		return st, err
	}
	groups := map[string]*GroupStatus{}
	for _, n := range names {
		st.Groups = append(st.Groups, GroupStatus{Name: n, Target: targets[n], Labels: labels[n]})
	}
	for i := range st.Groups {
		groups[st.Groups[i].Name] = &st.Groups[i]
	}
	for _, t := range ts {
		if !t.Enrolled {
			continue
		}
		a, err := r.Inventory.BootAction(ctx, t.MAC, now)
		if err != nil {
			return st, err
		}
		row := TerminalStatus{Name: t.Name, MAC: t.MAC, Groups: slices.Clone(groupsOf[t.MAC]), LastSeen: t.LastSeen,
			Online: !t.LastSeen.IsZero() && now.Sub(t.LastSeen) <= TerminalOnlineWindow, Version: t.Version.String(),
			VersionNote: t.VersionNote, Task: a.Task}
		if t.Version.IsZero() {
			row.Version = ""
		}
		for _, g := range row.Groups {
			if target := targets[g]; target != "" {
				row.Target = target
				break
			}
		}
		row.OnTarget = row.Target != "" && row.Version == row.Target
		st.Terminals = append(st.Terminals, row)
		sum.Terminals++
		if row.Online {
			sum.Online++
		}
		if row.Task != "" {
			sum.Busy++
		}
		for _, g := range row.Groups {
			gs := groups[g]
			if gs == nil {
				continue
			}
			gs.Members++
			if row.Online {
				gs.Online++
			}
			if row.Task != "" {
				gs.Busy++
			}
			if row.Version != "" && row.Version == gs.Target {
				gs.OnTarget++
			}
		}
	}
	return st, nil
}

// servers lists the region's servers from its registry, each healthy or not at now.
func (r *Region) servers(ctx context.Context, now time.Time) ([]ServerStatus, error) {
	ss, err := r.Inventory.Servers(ctx)
	if err != nil {
		return nil, err
	}
	stale := r.ServerStaleAfter
	if stale <= 0 {
		stale = state.StaleAfter(state.DefaultHeartbeat)
	}
	out := make([]ServerStatus, 0, len(ss))
	for _, s := range ss {
		out = append(out, ServerStatus{ID: s.ID, Labels: s.Labels, Endpoint: s.Endpoint, BootAddr: s.BootAddr, DHCP: s.DHCP,
			Version: s.Version, BootEnv: s.BootEnv, Started: s.Started, LastSeen: s.LastSeen, Healthy: s.Healthy(now, stale)})
	}
	return out, nil
}
