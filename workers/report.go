package workers

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/internal/ctxtime"
	"tms/workflows"
)

// StatusSource is what a region's reports are taken from: *activities.Region, or a simulation
// with the same method (bench/scale).
type StatusSource interface {
	Status(ctx context.Context, in activities.StatusInput) (activities.RegionStatus, error)
}

// reporter sends a region's status to central's service workflow every interval, from the
// process that runs the region's worker, as long as that worker runs: central calls a region
// offline after three missed reports (workflows.CentralService).
//
// A report is one signal: no timer, activity or workflow task of the region's. When it finds
// the store above its high-water mark, it also signals the region's service workflow to run
// eviction (workflows.SignalEvict), which stays a durable activity there.
//
// A region of several servers reports from one: the healthy server first by id in the report's
// own list of servers (every server computes the same one from the shared registry); a server
// missing from that list, or a list with no healthy server, reports.
type reporter struct {
	c        client.Client
	region   string
	serverID string // empty: the only server
	src      StatusSource
	interval time.Duration
	log      *slog.Logger

	stop     func()
	done     chan struct{}
	stopOnce sync.Once
}

// reportTimeout bounds one report: the status and the signals.
const reportTimeout = 30 * time.Second

func (rp *reporter) start() {
	ctx, cancel := context.WithCancel(context.Background())
	rp.stop, rp.done = cancel, make(chan struct{})
	go func() {
		defer close(rp.done)
		for ctxtime.Sleep(ctx, rp.report(ctx)) == nil {
		}
	}()
}

// halt stops the reports and waits for one under way; once.
func (rp *reporter) halt() {
	rp.stopOnce.Do(func() {
		if rp.stop != nil {
			rp.stop()
			<-rp.done
		}
	})
}

// report sends one report and returns when the next is due: the region's configured interval,
// which the status carries (central's pushed settings may change it), else the worker's.
func (rp *reporter) report(ctx context.Context) (next time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	// The status is the Status activity's code: a panic there fails an activity, never the
	// server (as Temporal's worker recovers it).
	defer func() {
		if p := recover(); p != nil {
			rp.log.Error("the region's status panicked; it reports again at the next interval", "panic", p)
			next = rp.interval
		}
	}()
	st, err := rp.src.Status(ctx, activities.StatusInput{})
	if err != nil {
		rp.log.Warn("the region could not take its status for its report to central", "err", err)
		return rp.interval
	}
	interval := rp.interval
	if st.Summary.Interval > 0 {
		interval = st.Summary.Interval
	}
	if !reportsFor(rp.serverID, st.Summary.Servers) {
		return interval
	}
	sum := st.Summary
	sum.Interval = interval
	// Central's service workflow may not run yet (central starting): the next report tries again.
	if err := rp.c.SignalWorkflow(ctx, workflows.CentralServiceID, "", workflows.SignalReport, sum); err != nil {
		rp.log.Warn("central did not take the region's report", "err", err)
	}
	if workflows.AboveHighWater(sum) {
		if err := rp.c.SignalWorkflow(ctx, workflows.RegionServiceID(rp.region), "", workflows.SignalEvict, nil); err != nil {
			rp.log.Warn("the region's service workflow did not take the request to evict above the high-water mark", "err", err)
		}
	}
	return interval
}

// reportsFor tells whether server id reports for its region, given the region's servers.
func reportsFor(id string, servers []activities.ServerStatus) bool {
	if id == "" {
		return true
	}
	first := ""
	listed := false
	for _, s := range servers {
		listed = listed || s.ID == id
		if s.Healthy && (first == "" || s.ID < first) {
			first = s.ID
		}
	}
	return !listed || first == "" || first == id
}
