// Package workers builds the Temporal workers of tms: the central worker on task queue
// "central", which runs the workflows and the catalog's activities, and one worker per region
// on "region.<id>", which runs the activities that touch that region's store and terminals.
//
//	w := workers.NewCentral(c, &activities.Central{Catalog: cat, Signer: signer})
//	err := w.Run(worker.InterruptCh())
package workers

import (
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"tms/activities"
	"tms/workflows"
)

// NewCentral returns the central worker: central's workflows (sharing, catalog listings and
// registrations) and activities.
func NewCentral(c client.Client, acts *activities.Central) worker.Worker {
	w := worker.New(c, activities.CentralQueue, worker.Options{})
	w.RegisterWorkflow(workflows.ShareImage)
	w.RegisterWorkflow(workflows.CentralService)
	w.RegisterWorkflow(workflows.CentralAdmin) // listings of an older tms, until they finish
	w.RegisterWorkflow(workflows.RegisterRegion)
	w.RegisterWorkflow(workflows.RegisterVersion)
	w.RegisterWorkflow(workflows.ConfigureRegion)
	w.RegisterWorkflow(workflows.PlanImage)
	w.RegisterWorkflow(workflows.PlanImageRegion)
	w.RegisterWorkflow(workflows.SchedulePlanner)
	w.RegisterWorkflow(workflows.PublishBootEnv)
	w.RegisterWorkflow(workflows.BootEnvRollout)
	w.RegisterActivity(acts)
	sw := &serviceWorker{Worker: w, c: c, services: []service{
		newService(workflows.CentralServiceID, activities.CentralQueue, workflows.CentralService, workflows.CentralServiceInput{})}}
	if acts.Planner != nil {
		sw.services = append(sw.services, newService(workflows.SchedulePlannerID, activities.CentralQueue, workflows.SchedulePlanner, workflows.SchedulePlannerInput{Interval: acts.PlannerInterval}))
	}
	return sw
}

// NewRegion returns region acts.ID's worker: the region's workflows (capture, deploy, inventory
// administration) and activities. Region workflows run on the region's queue, so a region keeps
// working on what it started while central is away.
func NewRegion(c client.Client, acts *activities.Region) worker.Worker {
	return NewRegionServer(c, acts, "")
}

// NewRegionServer is NewRegion for server serverID of a region of several servers.
func NewRegionServer(c client.Client, acts *activities.Region, serverID string) worker.Worker {
	return NewRegionWith(c, RegionWorker{ID: acts.ID, ServerID: serverID, Activities: acts, ReportInterval: acts.ReportInterval, Log: acts.Log, Options: worker.Options{
		// Transfers are long and I/O-bound; a handful at once keeps a classroom server's
		// disk and uplink busy without starving the terminals it boots.
		MaxConcurrentActivityExecutionSize: 8,
	}})
}

// RegionWorker describes a region's worker for NewRegionWith.
type RegionWorker struct {
	ID string
	// ServerID is this server's id among the region's servers (empty: the only one): one
	// server of a region reports its status (see reporter).
	ServerID string
	// Activities is registered under its methods' names: *activities.Region, or a simulation
	// with the same methods (bench/scale). Its Status makes the reports to central.
	Activities StatusSource
	// ReportInterval is how often the region reports to central, until its status says
	// otherwise (default workflows.DefaultReportInterval).
	ReportInterval time.Duration
	Options        worker.Options
	Log            *slog.Logger
}

// NewRegionWith returns a region's worker with the region's workflows, the given activities and
// worker options, and the region's service workflow: NewRegion with *activities.Region, a
// simulation of many regions in one process with its own (bench/scale).
func NewRegionWith(c client.Client, r RegionWorker) worker.Worker {
	w := worker.New(c, activities.RegionQueue(r.ID), r.Options)
	w.RegisterWorkflow(workflows.CaptureImage)
	w.RegisterWorkflow(workflows.DeployImage)
	w.RegisterWorkflow(workflows.DeployTerminal)
	w.RegisterWorkflow(workflows.UpdateImage)
	w.RegisterWorkflow(workflows.UpdateTerminal)
	w.RegisterWorkflow(workflows.RegionService)
	w.RegisterWorkflow(workflows.RegionAdmin) // listings of an older tms, until they finish
	w.RegisterWorkflow(workflows.PowerTerminals)
	w.RegisterActivity(r.Activities)
	interval, log := r.ReportInterval, r.Log
	if interval <= 0 {
		interval = workflows.DefaultReportInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sw := withService(w, c, workflows.RegionServiceID(r.ID), activities.RegionQueue(r.ID), workflows.RegionService,
		workflows.RegionServiceInput{Region: r.ID, Interval: r.ReportInterval})
	sw.report = &reporter{c: c, region: r.ID, serverID: r.ServerID, src: r.Activities, interval: interval,
		log: log.With("region", r.ID, "part", "report")}
	return sw
}
