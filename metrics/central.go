package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TaskCount is how many tasks of one kind are in one state.
type TaskCount struct {
	State string // a Temporal execution status, lower case: running, completed, failed…
	Count int64
}

// ClosedTask is a task that ended.
type ClosedTask struct {
	RunID        string
	Kind         string
	Start, Close time.Time
}

// TaskSource reads tasks from Temporal's visibility store.
type TaskSource interface {
	// CountTasks counts the tasks of kind by state.
	CountTasks(ctx context.Context, kind string) ([]TaskCount, error)
	// ClosedTasks lists at most limit tasks that closed at or after since, in any order.
	ClosedTasks(ctx context.Context, since time.Time, limit int) ([]ClosedTask, error)
}

// CentralSources are what central's scrape reads. Each is optional.
type CentralSources struct {
	Tasks TaskSource
	// Kinds are the task kinds counted (workflows.TaskKinds).
	Kinds []string
	// Regions counts the regions central's catalog knows.
	Regions func(ctx context.Context) (int64, error)
	// Relay is the relay store's usage.
	Relay func(ctx context.Context) (StoreUsage, error)
	// Plans reads the pre-distribution plans' regions, by plan and state.
	Plans func(ctx context.Context) ([]PlanRegions, error)
	// CacheFor is how long task counts are kept between scrapes (default 15 s): a visibility
	// query per kind is not free, and Prometheus may scrape often, or twice.
	CacheFor time.Duration
	// Timeout bounds one refresh (default 10 s).
	Timeout time.Duration
	Now     func() time.Time
	Log     *slog.Logger
}

// PlanRegions is how many of a plan's regions are in one state: ready, not-ready (the
// readiness check found them not ready), or pending (not ready, not checked yet).
type PlanRegions struct {
	Plan, State string
	Count       int
}

// PlanStates are the states tms_plan_regions counts, each present (0 when none).
var PlanStates = []string{"ready", "pending", "not-ready"}

// taskStates are Temporal's execution statuses as tms_tasks's state label spells them.
var taskStates = []string{"running", "completed", "failed", "canceled", "terminated", "continued_as_new", "timed_out"}

// Durations of tasks, in seconds: a power command takes seconds, a deploy of a room minutes, a
// share of a large image over a slow link hours.
var taskBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200}

// Bounds of the durations feed: how far back a refresh looks again for tasks that visibility
// showed late, how many closed tasks one refresh reads, and how many run ids it remembers.
const (
	closedSlack   = 2 * time.Minute
	closedPerPoll = 1000
	maxSeenRuns   = 20000
)

// Central is the series of central's server; a nil *Central counts nothing.
type Central struct {
	reg       *prometheus.Registry
	durations *prometheus.HistogramVec
	src       CentralSources

	mu      sync.Mutex // guards what follows, and one refresh at a time
	fetched time.Time
	counts  map[string][]TaskCount // by kind
	countOK bool
	since   time.Time            // closed tasks before this were fed to durations
	seen    map[string]time.Time // run ids fed, with their close time
}

// NewCentral makes central's series on a registry of their own. Task durations count the tasks
// that close from now on.
func NewCentral(src CentralSources) *Central {
	if src.CacheFor <= 0 {
		src.CacheFor = 15 * time.Second
	}
	if src.Timeout <= 0 {
		src.Timeout = 10 * time.Second
	}
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.Log == nil {
		src.Log = slog.New(slog.DiscardHandler)
	}
	m := &Central{
		reg: prometheus.NewRegistry(),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tms_task_duration_seconds",
			Help: "Time from start to close of the tasks that closed since central started, by kind.", Buckets: taskBuckets},
			[]string{"kind"}),
		src:  src,
		seen: map[string]time.Time{},
	}
	m.since = src.Now().Add(-closedSlack)
	for _, k := range src.Kinds {
		m.durations.WithLabelValues(k)
	}
	// The durations are collected by centralCollector after its refresh: registered on their
	// own, a scrape could gather them before the refresh that feeds them (collectors run
	// concurrently).
	m.reg.MustRegister(&centralCollector{m: m})
	return m
}

// Registry is where central's series are registered.
func (m *Central) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the series in Prometheus's exposition format.
func (m *Central) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return handlerFor(m.reg)
}

var (
	tasksDesc = prometheus.NewDesc("tms_tasks",
		"Tasks by kind and Temporal execution status (running, completed, failed, canceled, terminated, timed_out, continued_as_new), as visibility counts them (cached 15 s).",
		[]string{"kind", "state"}, nil)
	regionsDesc   = prometheus.NewDesc("tms_regions", "Regions central's catalog knows.", nil, nil)
	relayUsedDesc = prometheus.NewDesc("tms_relay_store_used_bytes", "Bytes central's relay store holds (refreshed at most once a minute).", nil, nil)
	relayCapDesc  = prometheus.NewDesc("tms_relay_store_capacity_bytes", "Size of the filesystem the relay store is on (absent for S3).", nil, nil)
	planDesc      = prometheus.NewDesc("tms_plan_regions",
		"Regions of each pre-distribution plan that is running or ended in the last day, by state: ready, pending (not checked yet), not-ready (the readiness check before the plan's deadline found them without the image).",
		[]string{"plan", "state"}, nil)
	centralSrcDesc = sourceErrDesc
)

// refresh reads task counts and newly closed tasks if the cache is older than CacheFor.
func (m *Central) refresh() {
	now := m.src.Now()
	if m.src.Tasks == nil || (!m.fetched.IsZero() && now.Sub(m.fetched) < m.src.CacheFor) {
		return
	}
	m.fetched = now
	ctx, cancel := context.WithTimeout(context.Background(), m.src.Timeout)
	defer cancel()
	counts := map[string][]TaskCount{}
	m.countOK = true
	for _, k := range m.src.Kinds {
		c, err := m.src.Tasks.CountTasks(ctx, k)
		if err != nil {
			m.src.Log.Warn("metrics: could not count tasks", "kind", k, "err", err)
			m.countOK = false
			break
		}
		counts[k] = c
	}
	if m.countOK {
		m.counts = counts
	}
	m.feedDurations(ctx)
}

// feedDurations observes the durations of tasks that closed since the last refresh, each run
// once: visibility may show a task late, so each refresh looks closedSlack further back than
// the last close it saw and skips the run ids it already fed.
func (m *Central) feedDurations(ctx context.Context) {
	closed, err := m.src.Tasks.ClosedTasks(ctx, m.since, closedPerPoll)
	if err != nil {
		m.src.Log.Warn("metrics: could not list closed tasks", "err", err)
		return
	}
	newest := m.since
	for _, t := range closed {
		if t.Close.After(newest) {
			newest = t.Close
		}
		if _, ok := m.seen[t.RunID]; ok || t.RunID == "" {
			continue
		}
		m.seen[t.RunID] = t.Close
		if d := t.Close.Sub(t.Start); d >= 0 && t.Kind != "" {
			m.durations.WithLabelValues(oneOfKinds(t.Kind, m.src.Kinds)).Observe(d.Seconds())
		}
	}
	if len(closed) < closedPerPoll {
		// Everything up to now was read: the next refresh starts closedSlack before the newest.
		if s := newest.Add(-closedSlack); s.After(m.since) {
			m.since = s
		}
	} else if newest.After(m.since) {
		// A full page: go on from its newest (the run ids read keep it from counting twice).
		m.since = newest
	}
	for id, at := range m.seen {
		if at.Before(m.since) {
			delete(m.seen, id)
		}
	}
	if len(m.seen) > maxSeenRuns {
		// More runs closed within closedSlack than memory allows: forget them all and move on;
		// at worst a run late in visibility is missed, none is counted twice within the page.
		clear(m.seen)
		m.since = newest
	}
}

func oneOfKinds(k string, kinds []string) string {
	if len(kinds) == 0 {
		return k
	}
	return oneOf(k, kinds)
}

type centralCollector struct{ m *Central }

func (c *centralCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tasksDesc, regionsDesc, relayUsedDesc, relayCapDesc, planDesc, centralSrcDesc} {
		ch <- d
	}
	c.m.durations.Describe(ch)
}

func (c *centralCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	m.refresh()
	if m.src.Tasks != nil {
		ch <- up("tasks", boolErr(m.countOK))
		for _, k := range m.src.Kinds {
			if m.counts == nil {
				continue
			}
			// Every state, 0 when none: visibility's GROUP BY leaves empty groups out, and a
			// series that vanishes at 0 breaks alerts and graphs.
			n := map[string]int64{}
			for _, tc := range m.counts[k] {
				n[oneOf(tc.State, taskStates)] += tc.Count
			}
			for _, s := range taskStates {
				ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n[s]), k, s)
			}
			if n[otherLabel] > 0 {
				ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n[otherLabel]), k, otherLabel)
			}
		}
	}
	m.durations.Collect(ch)
	m.mu.Unlock()
	if m.src.Regions != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.src.Timeout)
		n, err := m.src.Regions(ctx)
		cancel()
		ch <- up("regions", err)
		if err == nil {
			ch <- prometheus.MustNewConstMetric(regionsDesc, prometheus.GaugeValue, float64(n))
		}
	}
	if m.src.Relay != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.src.Timeout)
		u, err := m.src.Relay(ctx)
		cancel()
		ch <- up("relay_store", err)
		if err == nil {
			ch <- prometheus.MustNewConstMetric(relayUsedDesc, prometheus.GaugeValue, float64(u.Used))
			if u.Capacity > 0 {
				ch <- prometheus.MustNewConstMetric(relayCapDesc, prometheus.GaugeValue, float64(u.Capacity))
			}
		}
	}
	if m.src.Plans != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.src.Timeout)
		plans, err := m.src.Plans(ctx)
		cancel()
		ch <- up("plans", err)
		n := map[[2]string]int{}
		var names []string
		for _, p := range plans {
			if _, ok := n[[2]string{p.Plan, PlanStates[0]}]; !ok {
				names = append(names, p.Plan)
				for _, s := range PlanStates {
					n[[2]string{p.Plan, s}] = 0
				}
			}
			n[[2]string{p.Plan, oneOf(p.State, PlanStates)}] += p.Count
		}
		for _, name := range names {
			for _, s := range PlanStates {
				ch <- prometheus.MustNewConstMetric(planDesc, prometheus.GaugeValue, float64(n[[2]string{name, s}]), name, s)
			}
		}
	}
}

type failed struct{}

func (failed) Error() string { return "failed" }

func boolErr(ok bool) error {
	if ok {
		return nil
	}
	return failed{}
}
