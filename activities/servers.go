package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tms/state"
	"tms/store"
)

// A region may run several servers; its status reports list them (RegionSummary.Servers) and
// central keeps the latest list of each region in its catalog (RecordServers), which `tms region
// ls` shows.

// MaxReportedServers is the most servers a region's report lists (central keeps no more).
const MaxReportedServers = state.MaxServersListed

// RegionServersStore is where central keeps each region's latest server list (state.Catalog
// through StateCatalog).
type RegionServersStore interface {
	SetRegionServers(ctx context.Context, region string, servers []state.RegionServer, reported time.Time) error
	RegionServers(ctx context.Context) (map[string][]state.RegionServer, error)
}

var _ RegionServersStore = StateCatalog{}

func (s StateCatalog) SetRegionServers(ctx context.Context, region string, servers []state.RegionServer, reported time.Time) error {
	return s.C.SetRegionServers(ctx, region, servers, reported)
}

func (s StateCatalog) RegionServers(ctx context.Context) (map[string][]state.RegionServer, error) {
	return s.C.RegionServers(ctx)
}

// RecordServersInput is a region's server list from its latest report.
type RecordServersInput struct {
	Region   string
	Servers  []ServerStatus
	Received time.Time
}

// RecordServers keeps a region's server list in central's catalog, replacing the one before.
// A list that does not check (too long, a bad id or label) is ErrBadInput: a region's report is
// a network peer's input.
func (c *Central) RecordServers(ctx context.Context, in RecordServersInput) error {
	st, ok := c.Catalog.(RegionServersStore)
	if !ok {
		return errors.New("central's catalog keeps no region servers")
	}
	if err := state.ValidateRegionID(in.Region); err != nil {
		return ErrBadRegion.New(err.Error(), err)
	}
	if len(in.Servers) > state.MaxServersListed {
		return ErrBadInput.New(fmt.Sprintf("region %s reports %d servers, at most %d", in.Region, len(in.Servers), state.MaxServersListed), nil)
	}
	servers := make([]state.RegionServer, 0, len(in.Servers))
	for _, s := range in.Servers {
		rs := state.RegionServer{Server: state.Server{ID: s.ID, Labels: s.Labels, Endpoint: s.Endpoint, BootAddr: s.BootAddr,
			DHCP: s.DHCP, Version: s.Version, BootEnv: s.BootEnv, Started: s.Started, LastSeen: s.LastSeen}, Healthy: s.Healthy}
		if err := rs.Validate(); err != nil {
			return ErrBadInput.New(fmt.Sprintf("region %s: %v", in.Region, err), err)
		}
		servers = append(servers, rs)
	}
	err := st.SetRegionServers(ctx, in.Region, servers, in.Received)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknownRegion.New(fmt.Sprintf("central has no region %s", in.Region), err)
	}
	return err
}

// serverStatuses are the servers central keeps for a region, as status lists them.
func serverStatuses(ss []state.RegionServer) []ServerStatus {
	out := make([]ServerStatus, 0, len(ss))
	for _, s := range ss {
		out = append(out, ServerStatus{ID: s.ID, Labels: s.Labels, Endpoint: s.Endpoint, BootAddr: s.BootAddr, DHCP: s.DHCP,
			Version: s.Version, BootEnv: s.BootEnv, Started: s.Started, LastSeen: s.LastSeen, Healthy: s.Healthy})
	}
	return out
}
