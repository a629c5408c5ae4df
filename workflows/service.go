package workflows

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tms/activities"
	"tms/state"
)

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
	// SignalEvict asks a region's service workflow to run eviction: the region's reporter sends
	// it when a report finds the store above its high-water mark.
	SignalEvict = "evict"
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

// serviceHistoryLimit is the history length past which a service workflow continues as new
// (once no update is under way): a region reporting every 15 s and a few hundred reads a day
// stay far below Temporal's limits, and a replay after a worker restart stays short.
const serviceHistoryLimit = 2000

// DefaultReportInterval is how often a region reports its status to central.
const DefaultReportInterval = 15 * time.Second

// RegionServiceInput configures a region's service workflow.
type RegionServiceInput struct {
	Region string
	// Interval is how often the region reports to central (default DefaultReportInterval).
	Interval time.Duration
}

// RegionService is a region's long-lived service workflow, on the region's task queue. It
// answers the command line's "read" and "change" updates with the region's Admin activity (and
// "read" op "status" with the detailed status), and runs eviction (the EvictIfFull activity)
// when the region's reporter signals SignalEvict. A region's server starts it when it starts
// (one per region: a second start finds it running).
//
// The region's status reports to central come from its worker's process (workers.reporter),
// never through this workflow: a report that went through it cost a timer, an activity and two
// workflow tasks, which a district of 1,000 regions reporting every 15 s could not afford
// (docs/performance.md, "District scale"). A run recorded before this version (GetVersion
// "reports-from-the-worker") keeps reporting from here every Interval until it continues as
// new.
func RegionService(ctx workflow.Context, in RegionServiceInput) error {
	if in.Interval <= 0 {
		in.Interval = DefaultReportInterval
	}
	var r *activities.Region
	admin := func(ctx workflow.Context, req activities.AdminInput) (activities.AdminResult, error) {
		var res activities.AdminResult
		if req.Op == activities.OpStatus {
			err := workflow.ExecuteActivity(adminOptions(ctx), r.Status, activities.StatusInput{}).Get(ctx, &res.Status)
			return res, err
		}
		err := workflow.ExecuteActivity(adminOptions(ctx), r.Admin, req).Get(ctx, &res)
		return res, err
	}
	if err := setAdminHandler(ctx, UpdateRead, admin, true); err != nil {
		return err
	}
	if err := setAdminHandler(ctx, UpdateChange, admin, false); err != nil {
		return err
	}

	if workflow.GetVersion(ctx, "reports-from-the-worker", workflow.DefaultVersion, 1) == 1 {
		return regionServiceLoop(ctx, in)
	}
	log := workflow.GetLogger(ctx)
	reportCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
	})
	for {
		var st activities.RegionStatus
		if err := workflow.ExecuteActivity(reportCtx, r.Status, activities.StatusInput{}).Get(ctx, &st); err != nil {
			log.Warn("the region could not take its status", "err", err)
		} else {
			// The region's configuration says how often it reports (a workflow started by an
			// earlier run of the server may carry another interval).
			if st.Summary.Interval > 0 {
				in.Interval = st.Summary.Interval
			}
			sum := st.Summary
			sum.Interval = in.Interval
			// Central's service workflow may not be running yet (central starting): the next
			// report tries again.
			if err := workflow.SignalExternalWorkflow(ctx, CentralServiceID, "", SignalReport, sum).Get(ctx, nil); err != nil {
				log.Warn("central did not take the region's report", "err", err)
			}
			// Above its high-water mark, the store evicts the oldest versions nothing holds.
			if AboveHighWater(sum) && workflow.GetVersion(ctx, "evict-above-high-water", workflow.DefaultVersion, 1) == 1 {
				evictAboveHighWater(ctx)
			}
		}
		if err := workflow.Sleep(ctx, in.Interval); err != nil {
			return err
		}
		if continueAsNew(ctx) {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return err
			}
			return workflow.NewContinueAsNewError(ctx, RegionService, in)
		}
	}
}

// regionServiceLoop is RegionService's life once its handlers are set: it waits for an eviction
// signal (several pending ones make one eviction) and continues as new when its history grows
// long.
func regionServiceLoop(ctx workflow.Context, in RegionServiceInput) error {
	evict := workflow.GetSignalChannel(ctx, SignalEvict)
	for {
		if err := workflow.Await(ctx, func() bool { return evict.Len() > 0 || continueAsNew(ctx) }); err != nil {
			return err
		}
		if evict.Len() > 0 {
			for evict.ReceiveAsync(nil) {
			}
			evictAboveHighWater(ctx)
			continue
		}
		if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
			return err
		}
		// An eviction asked for meanwhile is asked again by the next report above the mark.
		return workflow.NewContinueAsNewError(ctx, RegionService, in)
	}
}

// evictAboveHighWater runs the region's EvictIfFull activity, logging what it did; a failure is
// logged, not returned: the next report above the mark asks again.
func evictAboveHighWater(ctx workflow.Context) {
	var r *activities.Region
	var res activities.MakeRoomResult
	log := workflow.GetLogger(ctx)
	if err := workflow.ExecuteActivity(evictOptions(ctx), r.EvictIfFull, activities.EvictInput{}).Get(ctx, &res); err != nil {
		log.Warn("the region could not evict above its high-water mark", "err", err)
	} else if len(res.Evicted) > 0 {
		log.Info("the region evicted versions above its high-water mark", "evicted", len(res.Evicted), "used", res.Used, "capacity", res.Capacity)
	}
}

// AboveHighWater tells whether a region's report shows its store above its high-water mark.
func AboveHighWater(s activities.RegionSummary) bool {
	return s.Capacity > 0 && s.HighWater > 0 && float64(s.Used) > s.HighWater*float64(s.Capacity)
}

// setAdminHandler answers update name with admin; read says whether the update takes read ops
// only (UpdateRead) or changes only (UpdateChange), which its validator checks before the
// update is accepted, so that an authorizer deciding on the update's name decides right.
func setAdminHandler(ctx workflow.Context, name string, admin func(workflow.Context, activities.AdminInput) (activities.AdminResult, error), read bool) error {
	return workflow.SetUpdateHandlerWithOptions(ctx, name, admin, workflow.UpdateHandlerOptions{
		Validator: func(_ workflow.Context, req activities.AdminInput) error {
			if !activities.KnownOp(req.Op) {
				return activities.ErrBadInput.New(fmt.Sprintf("%q is not a region request", req.Op), nil)
			}
			if activities.ReadOp(req.Op) != read {
				if read {
					return activities.ErrBadInput.New(fmt.Sprintf("%q changes the region's inventory: send it as a %q update", req.Op, UpdateChange), nil)
				}
				return activities.ErrBadInput.New(fmt.Sprintf("%q only reads: send it as a %q update", req.Op, UpdateRead), nil)
			}
			return nil
		},
	})
}

// sameServers tells whether two server lists say the same but for the servers' heartbeat
// times: the same servers, labels, endpoints, versions and health.
func sameServers(a, b []activities.ServerStatus) bool {
	return slices.EqualFunc(a, b, func(x, y activities.ServerStatus) bool {
		return x.ID == y.ID && x.Endpoint == y.Endpoint && x.BootAddr == y.BootAddr && x.DHCP == y.DHCP && x.Version == y.Version &&
			x.BootEnv == y.BootEnv && x.Healthy == y.Healthy && x.Started.Equal(y.Started) && sameLabels(x.Labels, y.Labels)
	})
}

// sameLabels reports whether two label sets are equal. maps.Equal ranges over a map, which
// workflowcheck refuses in workflow code; its answer does not depend on the order, so the call
// is marked as checked.
func sameLabels(a, b map[string]string) bool {
	return maps.Equal(a, b) //workflowcheck:ignore
}

// evictOptions run an eviction: it lists the store, removes versions and collects garbage,
// which takes a while on a large store.
func evictOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
	})
}

func adminOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 3, NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput,
			activities.ErrNotFound, activities.ErrConflict, activities.ErrUnknownTerminal, activities.ErrNotEnrolled)},
	})
}

// continueAsNew tells whether a service workflow's history is long enough to start afresh.
func continueAsNew(ctx workflow.Context) bool {
	info := workflow.GetInfo(ctx)
	return info.GetContinueAsNewSuggested() || info.GetCurrentHistoryLength() > serviceHistoryLimit
}

// goneVersions lists the versions prev listed that next does not, when both lists were taken
// and are whole (not cut at MaxReportedImages) and next is the newer report; none otherwise.
func goneVersions(prev, next activities.RegionSummary) []string {
	if !prev.ImagesListed || !next.ImagesListed || len(prev.Images) == 0 || prev.ImageCount > len(prev.Images) ||
		next.ImageCount > len(next.Images) || !next.At.After(prev.At) {
		return nil
	}
	have := make([]string, 0, len(next.Images))
	for _, im := range next.Images {
		have = append(have, im.Version)
	}
	slices.Sort(have)
	var gone []string
	for _, im := range prev.Images {
		if _, ok := slices.BinarySearch(have, im.Version); !ok {
			gone = append(gone, im.Version)
		}
	}
	return gone
}

// CentralServiceInput carries central's service workflow's state across continue-as-new.
type CentralServiceInput struct {
	// Reports are the last report of each region, sorted by region.
	Reports []activities.RegionSummary
	// Plans are the last report of each plan, sorted by name.
	Plans []PlanStatus `json:",omitempty"`
}

// CentralStatus is what central's service workflow answers the "status" query with.
type CentralStatus struct {
	// Reports are the last report of each region that has reported, sorted by region.
	Reports []activities.RegionSummary
	// Plans are the pre-distribution plans running or ended within planKept, sorted by name.
	Plans []PlanStatus `json:",omitempty"`
}

// planKept is how long central keeps an ended plan's last report for `tms status`.
const planKept = 24 * time.Hour

// CentralService is central's long-lived service workflow, on the central queue: it keeps each
// region's last status report (the "report" signal, stamped with when it arrived), answers the
// "status" query with them, and answers the command line's "read" updates (images, regions)
// from the catalog. Central's server starts it when it starts.
func CentralService(ctx workflow.Context, in CentralServiceInput) error {
	// The reports, sorted by region (a slice: workflow code ranges over no map).
	reports := slices.Clone(in.Reports)
	slices.SortFunc(reports, func(a, b activities.RegionSummary) int { return strings.Compare(a.Region, b.Region) })
	find := func(region string) (int, bool) {
		return slices.BinarySearchFunc(reports, region, func(r activities.RegionSummary, id string) int { return strings.Compare(r.Region, id) })
	}
	var c *activities.Central
	keep := func(rep activities.RegionSummary) {
		if state.ValidateRegionID(rep.Region) != nil {
			workflow.GetLogger(ctx).Warn("central's service workflow dropped a report from no valid region", "region", rep.Region)
			return
		}
		if len(rep.Images) > activities.MaxReportedImages {
			rep.Images = rep.Images[:activities.MaxReportedImages]
		}
		rep.Received = workflow.Now(ctx)
		if len(rep.Servers) > activities.MaxReportedServers {
			rep.Servers = rep.Servers[:activities.MaxReportedServers]
		}
		var prevServers []activities.ServerStatus
		if i, ok := find(rep.Region); ok {
			prevServers = reports[i].Servers
		}
		// The catalog keeps each region's server list for tms region ls: written when it
		// changes (a server joins, goes stale, runs another version), not on every report.
		if !sameServers(prevServers, rep.Servers) && workflow.GetVersion(ctx, "record-region-servers", workflow.DefaultVersion, 1) == 1 {
			sctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute,
				RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 3, NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput,
					activities.ErrBadRegion, activities.ErrUnknownRegion)}})
			if err := workflow.ExecuteActivity(sctx, c.RecordServers, activities.RecordServersInput{Region: rep.Region, Servers: rep.Servers,
				Received: rep.Received}).Get(ctx, nil); err != nil {
				workflow.GetLogger(ctx).Warn("central could not record a region's servers", "region", rep.Region, "err", err)
			}
		}
		if i, ok := find(rep.Region); ok {
			// Versions the last report listed and this one does not left the region's store
			// (evicted, removed): they leave central's catalog of locations.
			if gone := goneVersions(reports[i], rep); len(gone) > 0 && workflow.GetVersion(ctx, "forget-gone-versions", workflow.DefaultVersion, 1) == 1 {
				fctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute,
					RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 3, NonRetryableErrorTypes: activities.NonRetryable(activities.ErrBadInput, activities.ErrBadVersion)}})
				if err := workflow.ExecuteActivity(fctx, c.ForgetLocation, activities.ForgetInput{Region: rep.Region, Versions: gone}).Get(ctx, nil); err != nil {
					workflow.GetLogger(ctx).Warn("central could not forget versions a region no longer holds", "region", rep.Region, "versions", len(gone), "err", err)
				}
			}
			reports[i] = rep
		} else {
			reports = slices.Insert(reports, i, rep)
		}
	}
	sorted := func() []activities.RegionSummary { return slices.Clone(reports) }
	plans := slices.Clone(in.Plans)
	keepPlan := func(p PlanStatus) {
		i, ok := slices.BinarySearchFunc(plans, p.Name, func(q PlanStatus, name string) int { return strings.Compare(q.Name, name) })
		if ok {
			plans[i] = p
		} else {
			plans = slices.Insert(plans, i, p)
		}
		now := workflow.Now(ctx)
		plans = slices.DeleteFunc(plans, func(q PlanStatus) bool { return q.Ended && now.Sub(q.By) > planKept })
	}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (CentralStatus, error) {
		return CentralStatus{Reports: sorted(), Plans: slices.Clone(plans)}, nil
	}); err != nil {
		return err
	}
	err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateRead, func(ctx workflow.Context, req CentralAdminInput) (CentralAdminResult, error) {
		res, err := centralListing(ctx, req)
		// The catalog knows where regions are; their reports, how full their stores are.
		for i, r := range res.Regions {
			if j, ok := find(r.ID); ok {
				res.Regions[i].Capacity, res.Regions[i].Used = reports[j].Capacity, reports[j].Used
				res.Regions[i].HighWater, res.Regions[i].Images = reports[j].HighWater, max(reports[j].ImageCount, len(reports[j].Images))
				if len(reports[j].Servers) > 0 {
					res.Regions[i].Servers = slices.Clone(reports[j].Servers) // fresher than the catalog's
				}
			}
		}
		return res, err
	}, workflow.UpdateHandlerOptions{Validator: func(_ workflow.Context, req CentralAdminInput) error {
		if !slices.Contains(centralListings, req.Op) {
			return activities.ErrBadInput.New(fmt.Sprintf("%q is not a central listing: %s", req.Op, strings.Join(centralListings, ", ")), nil)
		}
		return nil
	}})
	if err != nil {
		return err
	}

	ch := workflow.GetSignalChannel(ctx, SignalReport)
	planCh := workflow.GetSignalChannel(ctx, SignalPlan)
	// Each signal decodes into a value of its own: decoding into one reused would keep the
	// fields an older report had and a newer one leaves out (empty lists, zero counts), and the
	// reports kept would share their lists with the next one decoded.
	sel := workflow.NewSelector(ctx)
	sel.AddReceive(ch, func(c workflow.ReceiveChannel, _ bool) {
		var rep activities.RegionSummary
		c.Receive(ctx, &rep)
		keep(rep)
	})
	sel.AddReceive(planCh, func(c workflow.ReceiveChannel, _ bool) {
		var plan PlanStatus
		c.Receive(ctx, &plan)
		if planName.MatchString(plan.Name) {
			keepPlan(plan)
		}
	})
	for {
		sel.Select(ctx)
		if continueAsNew(ctx) {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return err
			}
			// Reports that arrived meanwhile are drained into the state carried over.
			for {
				var rep activities.RegionSummary
				if !ch.ReceiveAsync(&rep) {
					break
				}
				keep(rep)
			}
			for {
				var plan PlanStatus
				if !planCh.ReceiveAsync(&plan) {
					break
				}
				if planName.MatchString(plan.Name) {
					keepPlan(plan)
				}
			}
			return workflow.NewContinueAsNewError(ctx, CentralService, CentralServiceInput{Reports: sorted(), Plans: slices.Clone(plans)})
		}
	}
}
