package workflows

import "strings"

// Every region and central run one long-lived service workflow: the region's reports its status
// to central's, and both answer the tms command line's reads and inventory changes as Workflow
// Updates, so a listing leaves no workflow behind in the Temporal UI (only history in the
// service workflow, which continues as new before it grows large). Their ids, update and query
// names are the protocol the authorizer decides on: "read" never changes anything, "change"
// edits a region's inventory.
const (
	// CentralServiceID is central's service workflow, on the central queue.
	CentralServiceID = "service/central"
	// UpdateRead answers a listing (regions, images, terminals, groups, settings...).
	UpdateRead = "read"
	// UpdateChange makes an inventory change in a region (enroll, rename, move, remove...).
	UpdateChange = "change"
	// QueryStatus returns what central knows of every region (central's service workflow).
	QueryStatus = "status"
	// SignalReport carries a region's status report to central's service workflow.
	SignalReport = "report"
)

const regionServicePrefix = "service/region/"

// RegionServiceID is region's service workflow, on the region's task queue.
func RegionServiceID(region string) string { return regionServicePrefix + region }

// ServiceRegion returns the region whose service workflow id is, and false for any other id
// (central's service workflow included).
func ServiceRegion(id string) (string, bool) {
	r, ok := strings.CutPrefix(id, regionServicePrefix)
	return r, ok && r != "" && !strings.Contains(r, "/")
}
