package activities

import (
	"context"

	"tms/manifest"
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

func location(r state.Region) Location {
	return Location{Region: r.ID, Endpoint: r.Endpoint, Labels: r.Labels}
}
