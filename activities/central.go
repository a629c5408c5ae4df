package activities

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"tms/manifest"
	"tms/signing"
	"tms/state"
)

// RegionInfo is a region's descriptor as it reports itself to central.
type RegionInfo struct {
	ID       string
	Labels   map[string]string
	Capacity int64 // bytes its store may use; 0 if unknown
	Used     int64
	// HighWater is its store's high-water mark and Images how many versions it holds, from
	// its last status report (0: none yet).
	HighWater float64 `json:",omitempty"`
	Images    int     `json:",omitempty"`
	Endpoint  string  // data endpoint peers pull from
	LastSeen  time.Time
	// Timezone is the IANA zone the region's schedules are written in (region.timezone);
	// empty from a region that registered before regions reported one.
	Timezone string
	// Servers are the region's servers as its latest report listed them (listings only).
	Servers []ServerStatus `json:",omitempty"`
}

// ImageInfo is one version in central's catalog with its tags and where copies are.
type ImageInfo struct {
	VersionInfo
	// Signature is central's signature of the version; zero for a version recorded before
	// central signed what it registers.
	Signature signing.Signature
	Tags      []string
	Regions   []string // regions holding a verified copy
	Pending   []string // regions where a copy is under way
}

// RegisterVersionInput records a version a region has published.
type RegisterVersionInput struct {
	Info   VersionInfo
	Tag    string // points NAME:Tag at the version; empty for none
	Region string // holds a verified copy
}

// RegisterVersionResult carries central's signature of the registered version, which the
// region stores beside it.
type RegisterVersionResult struct {
	Signature signing.Signature
}

// RegisterVersion records a version captured or imported in a region, signs it with central's
// key, and records the region's copy as verified (the region checked every chunk when it
// stored it).
func (c *Central) RegisterVersion(ctx context.Context, in RegisterVersionInput) (RegisterVersionResult, error) {
	if err := manifest.ValidateName(in.Info.Name); err != nil {
		return RegisterVersionResult{}, ErrBadImage.New(err.Error(), err)
	}
	id, err := manifest.ParseID(in.Info.Version)
	if err != nil {
		return RegisterVersionResult{}, ErrBadVersion.New(err.Error(), err)
	}
	if c.Key == nil {
		return RegisterVersionResult{}, errNoKey("sign version " + id.Short())
	}
	sig := c.Key.SignVersion(id)
	if err := c.Catalog.RecordVersion(ctx, in.Info, sig, in.Tag); err != nil {
		return RegisterVersionResult{}, err
	}
	return RegisterVersionResult{Signature: sig}, c.Catalog.SetVerified(ctx, id, in.Region)
}

// RegisterRegion creates or updates a region's descriptor.
func (c *Central) RegisterRegion(ctx context.Context, in RegionInfo) error {
	if err := state.ValidateRegionID(in.ID); err != nil {
		return ErrBadRegion.New(err.Error(), err)
	}
	if u, err := url.Parse(in.Endpoint); in.Endpoint != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		return ErrBadRegion.New(fmt.Sprintf("region %s: data endpoint %q is not an http(s) URL", in.ID, in.Endpoint), err)
	}
	if _, err := time.LoadLocation(in.Timezone); in.Timezone != "" && (err != nil || in.Timezone == "Local") {
		return ErrBadRegion.New(fmt.Sprintf("region %s: time zone %q is not an IANA zone name like Europe/Berlin", in.ID, in.Timezone), err)
	}
	return c.Catalog.UpsertRegion(ctx, in)
}

// ListImagesResult is central's catalog.
type ListImagesResult struct{ Images []ImageInfo }

// ListImages lists every version in the catalog.
func (c *Central) ListImages(ctx context.Context) (ListImagesResult, error) {
	imgs, err := c.Catalog.Images(ctx)
	return ListImagesResult{Images: imgs}, err
}

// ListRegionsResult lists the regions central knows.
type ListRegionsResult struct{ Regions []RegionInfo }

// ListRegions lists the regions.
func (c *Central) ListRegions(ctx context.Context) (ListRegionsResult, error) {
	rs, err := c.Catalog.Regions(ctx)
	return ListRegionsResult{Regions: rs}, err
}
