package workers

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
)

// serviceWorker is a worker that, once it takes tasks, makes sure its service workflow
// (workflows.CentralService, workflows.RegionService) runs: wherever central's or a region's
// worker runs, the command line's reads and the region's status reports have a workflow to go
// to.
type serviceWorker struct {
	worker.Worker
	c        client.Client
	services []service
	// report, when set, sends the region's status reports while the worker runs.
	report *reporter
}

// service is a long-lived workflow a worker keeps running.
type service struct {
	start client.StartWorkflowOptions
	wf    any
	in    any
}

// Start starts the worker, then the service workflow, or finds it running: a server that
// restarts takes up the same one; one that ended (terminated by an admin, say) starts afresh.
func (w *serviceWorker) Start() error {
	if err := w.Worker.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range w.services {
		if _, err := w.c.ExecuteWorkflow(ctx, s.start, s.wf, s.in); err != nil {
			w.Worker.Stop()
			return fmt.Errorf("starting the service workflow %s: %w", s.start.ID, err)
		}
	}
	if w.report != nil {
		w.report.start()
	}
	return nil
}

// Stop stops the reports, then the worker.
func (w *serviceWorker) Stop() {
	if w.report != nil {
		w.report.halt()
	}
	w.Worker.Stop()
}

// Run starts the worker and its service workflows, and stops them when interruptCh says so.
func (w *serviceWorker) Run(interruptCh <-chan any) error {
	if err := w.Start(); err != nil {
		return err
	}
	<-interruptCh
	w.Stop()
	return nil
}

func withService(w worker.Worker, c client.Client, id, queue string, wf, in any) *serviceWorker {
	return &serviceWorker{Worker: w, c: c, services: []service{newService(id, queue, wf, in)}}
}

func newService(id, queue string, wf, in any) service {
	return service{wf: wf, in: in, start: client.StartWorkflowOptions{
		ID: id, TaskQueue: queue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}}
}
