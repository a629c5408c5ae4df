package activities

import (
	"context"
	"time"

	"tms/manifest"
	"tms/signing"
	"tms/state"
)

// StateCatalog is the Catalog the central worker runs with: the SQLite catalog of package state.
type StateCatalog struct{ C *state.Catalog }

var _ Catalog = StateCatalog{}

func (s StateCatalog) Resolve(ctx context.Context, ref string) (manifest.ID, error) {
	return s.C.Resolve(ctx, ref)
}

func (s StateCatalog) VerifiedLocations(ctx context.Context, id manifest.ID) ([]Location, error) {
	locs, err := s.C.Locations(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []Location
	for _, l := range locs {
		if l.State == state.Verified {
			out = append(out, location(l.Region))
		}
	}
	return out, nil
}

func (s StateCatalog) Region(ctx context.Context, id string) (Location, error) {
	r, err := s.C.GetRegion(ctx, id)
	if err != nil {
		return Location{}, err
	}
	return location(r), nil
}

func (s StateCatalog) SetVerified(ctx context.Context, id manifest.ID, region string) error {
	return s.C.SetLocation(ctx, id, region, state.Verified)
}

func (s StateCatalog) RecordVersion(ctx context.Context, v VersionInfo, sig signing.Signature, tag string) error {
	id, err := manifest.ParseID(v.Version)
	if err != nil {
		return err
	}
	var parent manifest.ID
	if v.Parent != "" {
		if parent, err = manifest.ParseID(v.Parent); err != nil {
			return err
		}
	}
	return s.C.RecordVersion(ctx, state.Version{ID: id, Name: v.Name, Parent: parent, Created: v.Created,
		DiskSize: v.DiskSize, ChunkSize: v.ChunkSize, StoredBytes: v.StoredBytes, KeyID: sig.KeyID, Signature: sig.Signature}, tag)
}

func (s StateCatalog) UpsertRegion(ctx context.Context, r RegionInfo) error {
	return s.C.UpsertRegion(ctx, state.Region{ID: r.ID, Labels: r.Labels, Capacity: r.Capacity, Used: r.Used,
		Endpoint: r.Endpoint, LastSeen: time.Now(), Timezone: r.Timezone})
}

func (s StateCatalog) Regions(ctx context.Context) ([]RegionInfo, error) {
	rs, err := s.C.ListRegions(ctx)
	if err != nil {
		return nil, err
	}
	servers, err := s.C.RegionServers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RegionInfo, 0, len(rs))
	for _, r := range rs {
		info := RegionInfo{ID: r.ID, Labels: r.Labels, Capacity: r.Capacity, Used: r.Used, Endpoint: r.Endpoint, LastSeen: r.LastSeen, Timezone: r.Timezone}
		if ss := servers[r.ID]; len(ss) > 0 {
			info.Servers = serverStatuses(ss)
		}
		out = append(out, info)
	}
	return out, nil
}

func (s StateCatalog) StoredBytes(ctx context.Context, id manifest.ID) (int64, error) {
	return s.C.StoredBytes(ctx, id)
}

func (s StateCatalog) Images(ctx context.Context) ([]ImageInfo, error) {
	vs, err := s.C.Versions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ImageInfo, 0, len(vs))
	for _, v := range vs {
		info := ImageInfo{VersionInfo: VersionInfo{Version: v.ID.String(), Name: v.Name, Parent: v.Parent.String(),
			Created: v.Created, DiskSize: v.DiskSize, ChunkSize: v.ChunkSize, StoredBytes: v.StoredBytes},
			Signature: signing.Signature{KeyID: v.KeyID, Signature: v.Signature}, Tags: v.Tags}
		for _, l := range v.Locations {
			if l.State == state.Verified {
				info.Regions = append(info.Regions, l.Region.ID)
			} else {
				info.Pending = append(info.Pending, l.Region.ID)
			}
		}
		out = append(out, info)
	}
	return out, nil
}

func location(r state.Region) Location {
	return Location{Region: r.ID, Endpoint: r.Endpoint, Labels: r.Labels}
}

// ForgetLocation forgets that region holds version id.
func (s StateCatalog) ForgetLocation(ctx context.Context, id manifest.ID, region string) error {
	return s.C.RemoveLocation(ctx, id, region)
}
