package activities

import (
	"context"
	"errors"

	"tms/manifest"
	"tms/store"
)

// ResolvePlanInput names what a pre-distribution plan sends where.
type ResolvePlanInput struct {
	Image   string // NAME, NAME:TAG or NAME@VERSION
	Regions []string
}

// ResolvePlanResult is the version a plan sends and the regions' zones, in the order asked.
type ResolvePlanResult struct {
	Version     string
	Name        string // the image's name
	StoredBytes int64  // the version's stored bytes (0 if the catalog does not know)
	Zones       []string
}

// ResolvePlan resolves a plan's image to the version it sends (so a tag moved later does not
// change what a plan already under way sends) and reads each region's time zone, in which the
// plan's window is placed. An unknown image or region is a non-retryable error naming it.
func (c *Central) ResolvePlan(ctx context.Context, in ResolvePlanInput) (ResolvePlanResult, error) {
	var res ResolvePlanResult
	ref, err := manifest.ParseRef(in.Image)
	if err != nil {
		return res, ErrBadImage.New(err.Error(), err)
	}
	regions, err := c.Catalog.Regions(ctx)
	if err != nil {
		return res, err
	}
	zones := map[string]string{}
	for _, r := range regions {
		zones[r.ID] = r.Timezone
	}
	for _, r := range in.Regions {
		zone, ok := zones[r]
		if !ok {
			return res, ErrUnknownRegion.New("unknown region "+r, nil)
		}
		res.Zones = append(res.Zones, zone)
	}
	id, err := c.Catalog.Resolve(ctx, in.Image)
	if errors.Is(err, store.ErrNotFound) {
		return res, ErrUnknownImage.New("image "+in.Image+" is not in the catalog", err)
	}
	if err != nil {
		return res, err
	}
	res.Version, res.Name = id.String(), ref.Name
	if res.StoredBytes, err = c.Catalog.StoredBytes(ctx, id); errors.Is(err, store.ErrNotFound) {
		res.StoredBytes, err = 0, nil // resolved but not recorded: the region's own check counts it
	}
	if err != nil {
		return res, err
	}
	return res, nil
}
