package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
)

// RegionAdmin lists or edits a region's inventory (terminals, groups, tasks): what an older tms
// started as a workflow per request (tms now sends RegionService a "read" or "change" update).
// It stays registered so such workflows finish. It runs on the region's task queue.
func RegionAdmin(ctx workflow.Context, in activities.AdminInput) (activities.AdminResult, error) {
	var r *activities.Region
	var res activities.AdminResult
	ctx = adminOptions(ctx)
	err := workflow.ExecuteActivity(ctx, r.Admin, in).Get(ctx, &res)
	return res, err
}

// CentralAdminInput names a central listing: "images", "regions", or "region-settings" (the
// run-time settings Region last applied, as central recorded them).
type CentralAdminInput struct {
	Op     string
	Region string `json:",omitempty"`
}

// CentralAdminResult carries a central listing.
type CentralAdminResult struct {
	Images   []activities.ImageInfo
	Regions  []activities.RegionInfo
	Settings []activities.SettingInfo `json:",omitempty"`
	// BootEnvs are the published versions of the in-memory OS ("bootenvs").
	BootEnvs []activities.BootEnvInfo `json:",omitempty"`
}

// centralListings are the ops of CentralAdminInput.
var centralListings = []string{"images", "regions", "region-settings", "bootenvs"}

// CentralAdmin lists central's catalog for the tms command line: what an older tms started as
// a workflow per listing (tms now sends CentralService a "read" update). It runs on the central
// queue.
func CentralAdmin(ctx workflow.Context, in CentralAdminInput) (CentralAdminResult, error) {
	return centralListing(ctx, in)
}

// centralListing runs a central listing's activity.
func centralListing(ctx workflow.Context, in CentralAdminInput) (CentralAdminResult, error) {
	var c *activities.Central
	var res CentralAdminResult
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3},
	})
	switch in.Op {
	case "images":
		var out activities.ListImagesResult
		err := workflow.ExecuteActivity(ctx, c.ListImages).Get(ctx, &out)
		res.Images = out.Images
		return res, err
	case "regions":
		var out activities.ListRegionsResult
		err := workflow.ExecuteActivity(ctx, c.ListRegions).Get(ctx, &out)
		res.Regions = out.Regions
		return res, err
	case "bootenvs":
		var out activities.ListBootEnvsResult
		err := workflow.ExecuteActivity(ctx, c.ListBootEnvs).Get(ctx, &out)
		res.BootEnvs = out.BootEnvs
		return res, err
	case "region-settings":
		var out activities.RegionSettingsResult
		err := workflow.ExecuteActivity(ctx, c.RegionSettings, activities.RegionSettingsInput{Region: in.Region}).Get(ctx, &out)
		res.Settings = out.Settings
		return res, err
	}
	return res, activities.ErrBadInput.New("unknown central listing "+in.Op, nil)
}

// RegisterRegion records a region's descriptor in central's catalog; a region's server runs it
// when it starts. It runs on the central queue.
func RegisterRegion(ctx workflow.Context, in activities.RegionInfo) error {
	var c *activities.Central
	return workflow.ExecuteActivity(centralOptions(ctx), c.RegisterRegion, in).Get(ctx, nil)
}

// RegisterVersion records a version published in a region (an import on the regional server)
// in central's catalog, where central signs it, and stores the signature beside the version in
// the region's store. It runs on the central queue.
func RegisterVersion(ctx workflow.Context, in activities.RegisterVersionInput) (activities.RegisterVersionResult, error) {
	var c *activities.Central
	var r *activities.Region
	var res activities.RegisterVersionResult
	if err := workflow.ExecuteActivity(centralOptions(ctx), c.RegisterVersion, in).Get(ctx, &res); err != nil {
		return res, err
	}
	if workflow.GetVersion(ctx, "store-signature", workflow.DefaultVersion, 1) >= 1 {
		err := workflow.ExecuteActivity(regionOptions(ctx, in.Region), r.StoreSignature,
			activities.StoreSignatureInput{Version: in.Info.Version, Signature: res.Signature}).Get(ctx, nil)
		return res, err
	}
	return res, nil
}
