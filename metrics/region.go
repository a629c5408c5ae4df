package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Terminals are a region's terminal counts at one moment.
type Terminals struct {
	Enrolled int64 // terminals an admin enrolled
	Online   int64 // enrolled terminals whose agent (or in-memory OS) reported recently
}

// StoreUsage is what a store holds and how much it could hold.
type StoreUsage struct {
	Used     int64 // bytes the store's objects take
	Capacity int64 // bytes of the filesystem it is on; 0: unknown (S3)
}

// RegionSources are what a region's scrape reads at the moment of the scrape. Each is optional:
// a nil one leaves its series out.
type RegionSources struct {
	// Terminals counts the region's terminals (state.Inventory.CountTerminals), with a bounded
	// query: it runs on every scrape.
	Terminals func(ctx context.Context) (Terminals, error)
	// Store is the region's store's usage (store.Store.Usage), cached by the store.
	Store func(ctx context.Context) (StoreUsage, error)
	// HighWater is the store's high-water mark, a fraction of its capacity (region.store_high_water).
	HighWater func() float64
	// WANRate is the WAN rate cap in force, in bytes a second (0: none).
	WANRate func() int64
	// Timeout bounds each source's call per scrape (default 5 s).
	Timeout time.Duration
	Log     *slog.Logger
}

// Region is the series of a region's server. The zero value is not usable; a nil *Region is,
// and counts nothing.
type Region struct {
	reg      *prometheus.Registry
	bytes    *prometheus.CounterVec
	verified *prometheus.CounterVec
	refused  *prometheus.CounterVec
	dhcp     *prometheus.CounterVec
	tftp     *prometheus.CounterVec
	requests *prometheus.CounterVec
	assigned *prometheus.CounterVec
	dropped  prometheus.Counter
	evicted  *prometheus.CounterVec
}

// Reasons eviction runs for, the label of tms_store_evictions_total.
const (
	EvictShare     = "share"      // a share was about to fill the store
	EvictPlan      = "plan"       // central made room ahead of a plan (MakeRoom)
	EvictHighWater = "high_water" // the store was above its high-water mark
)

var evictReasons = []string{EvictShare, EvictPlan, EvictHighWater}

// Evicted counts n image versions eviction removed, for reason.
func (m *Region) Evicted(reason string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.evicted.WithLabelValues(reason).Add(float64(n))
}

// NewRegion makes a region's series on a registry of their own.
func NewRegion(src RegionSources) *Region {
	m := &Region{
		reg: prometheus.NewRegistry(),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_transfer_bytes_total",
			Help: "Bytes of chunks (compressed, as stored) moved, by path (peer, relay, agent) and direction (in, out)."},
			[]string{"path", "direction"}),
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_chunks_verified_total",
			Help: "Chunks received, checked against their id and stored, by path."}, []string{"path"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_chunks_refused_total",
			Help: "Chunks received and refused, by path and reason (hash_mismatch, bad_frame, too_large, quota)."},
			[]string{"path", "reason"}),
		dhcp: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_dhcp_requests_total",
			Help: "DHCP requests by result: answered, or why not (not_admitted, rate_limited, admit_error, overloaded, malformed, ignored, error)."},
			[]string{"result"}),
		tftp: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_tftp_requests_total",
			Help: "TFTP requests by result: answered, size_probe, or why not (not_allowed, not_found, write_denied, failed)."},
			[]string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_http_requests_total",
			Help: "Requests to the region's HTTP service (agent API, data endpoint, boot scripts) by route pattern and status class."},
			[]string{"route", "code"}),
		assigned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_swarm_assignments_total",
			Help: "Chunks the swarm tracker assigned to terminals, by source: peer, seed (the region's first send of a chunk), relief (the region again, from a seed slot that stood idle, while every holder was busy) or fallback (the region, for a terminal that found no peer for a while)."},
			[]string{"source"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "tms_swarm_peers_dropped_total",
			Help: "Terminals the swarm tracker stopped sending peers to, because two peers reported bad bytes from them."}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tms_store_evictions_total",
			Help: "Image versions removed from the region's store to make room, by reason (share, plan, high_water)."}, []string{"reason"}),
	}
	for _, r := range evictReasons {
		m.evicted.WithLabelValues(r)
	}
	// Every known series from the start, at 0: a rate over a series that appears only with
	// its first event misses that event, and an alert on it has nothing to compare before.
	for _, p := range paths {
		m.verified.WithLabelValues(p)
		for _, d := range directions {
			m.bytes.WithLabelValues(p, d)
		}
		for _, r := range reasons {
			m.refused.WithLabelValues(p, r)
		}
	}
	for _, r := range dhcpResults {
		m.dhcp.WithLabelValues(r)
	}
	for _, src := range swarmSources {
		m.assigned.WithLabelValues(src)
	}
	for _, r := range tftpResults {
		m.tftp.WithLabelValues(r)
	}
	m.reg.MustRegister(m.bytes, m.verified, m.refused, m.dhcp, m.tftp, m.requests, m.assigned, m.dropped, m.evicted, &regionCollector{src: src})
	return m
}

// Registry is where the region's series are registered.
func (m *Region) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the series in Prometheus's exposition format.
func (m *Region) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return handlerFor(m.reg)
}

// AddBytes counts n bytes moved by path in direction.
func (m *Region) AddBytes(path, direction string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.bytes.WithLabelValues(oneOf(path, paths), oneOf(direction, directions)).Add(float64(n))
}

// Sources of swarm assignments, as SwarmAssigned is told.
const (
	SwarmPeer     = "peer"
	SwarmSeed     = "seed"
	SwarmRelief   = "relief"
	SwarmFallback = "fallback"
)

var swarmSources = []string{SwarmPeer, SwarmSeed, SwarmRelief, SwarmFallback}

// SwarmAssigned counts n chunks the swarm tracker assigned from source (Swarm*).
func (m *Region) SwarmAssigned(source string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.assigned.WithLabelValues(oneOf(source, swarmSources)).Add(float64(n))
}

// SwarmAssignedCounter is the series SwarmAssigned adds to (tests read it).
func (m *Region) SwarmAssignedCounter(source string) prometheus.Counter {
	return m.assigned.WithLabelValues(oneOf(source, swarmSources))
}

// SwarmPeerDropped counts a terminal the tracker stopped sending peers to.
func (m *Region) SwarmPeerDropped() {
	if m == nil {
		return
	}
	m.dropped.Inc()
}

// ChunkVerified counts a chunk received by path that matched its id and was kept.
func (m *Region) ChunkVerified(path string) {
	if m == nil {
		return
	}
	m.verified.WithLabelValues(oneOf(path, paths)).Inc()
}

// ChunkRefused counts a chunk received by path and refused for reason.
func (m *Region) ChunkRefused(path, reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(oneOf(path, paths), oneOf(reason, reasons)).Inc()
}

// DHCPRequest counts a DHCP request by its result (DHCPAnswered…).
func (m *Region) DHCPRequest(result string) {
	if m == nil {
		return
	}
	m.dhcp.WithLabelValues(oneOf(result, dhcpResults)).Inc()
}

// TFTPRequest counts a TFTP request by its result (TFTPAnswered…).
func (m *Region) TFTPRequest(result string) {
	if m == nil {
		return
	}
	m.tftp.WithLabelValues(oneOf(result, tftpResults)).Inc()
}

// Flow is one path and direction of chunks, for the packages that move them (transfer,
// agentapi): they count through it without knowing about labels.
type Flow struct {
	m         *Region
	path, dir string
}

// Flow returns the counters of path in direction.
func (m *Region) Flow(path, direction string) Flow { return Flow{m: m, path: path, dir: direction} }

// Bytes counts n bytes moved.
func (f Flow) Bytes(n int64) { f.m.AddBytes(f.path, f.dir, n) }

// Verified counts a chunk received and kept.
func (f Flow) Verified() { f.m.ChunkVerified(f.path) }

// Refused counts a chunk received and refused for reason.
func (f Flow) Refused(reason string) { f.m.ChunkRefused(f.path, reason) }

// Instrument counts each request h serves by the pattern of the mux route that took it (the
// request's Pattern, which http.ServeMux sets) and its status class. Patterns are the server's
// own, so the label stays small whatever clients ask; a request no route took counts as
// "other".
func (m *Region) Instrument(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return instrument(m.requests, h)
}

// regionCollector reads the region's sources at scrape time.
type regionCollector struct{ src RegionSources }

var (
	enrolledDesc = prometheus.NewDesc("tms_terminals_enrolled", "Terminals enrolled in the region.", nil, nil)
	onlineDesc   = prometheus.NewDesc("tms_terminals_online",
		"Enrolled terminals whose agent or in-memory OS reported to the region recently (region's online window).", nil, nil)
	usedDesc      = prometheus.NewDesc("tms_store_used_bytes", "Bytes the region's image store holds (refreshed at most once a minute).", nil, nil)
	capacityDesc  = prometheus.NewDesc("tms_store_capacity_bytes", "Size of the filesystem the region's image store is on (absent for S3).", nil, nil)
	highWaterDesc = prometheus.NewDesc("tms_store_high_water_ratio",
		"The store's high-water mark as a fraction of its capacity: above it, the oldest images are evicted.", nil, nil)
	wanRateDesc = prometheus.NewDesc("tms_wan_rate_limit_bytes",
		"The cap in force on the region's WAN transfers (peer pulls, what it serves to peers, relay both ways), in bytes a second; 0: no cap.", nil, nil)
	sourceErrDesc = prometheus.NewDesc("tms_metrics_source_up",
		"1 if the scrape could read the source (terminals, store), 0 if it failed (its series are then absent).", []string{"source"}, nil)
)

func (c *regionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{enrolledDesc, onlineDesc, usedDesc, capacityDesc, highWaterDesc, wanRateDesc, sourceErrDesc} {
		ch <- d
	}
}

func (c *regionCollector) Collect(ch chan<- prometheus.Metric) {
	timeout := c.src.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	log := c.src.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.src.Terminals != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		t, err := c.src.Terminals(ctx)
		cancel()
		ch <- up("terminals", err)
		if err != nil {
			log.Warn("metrics: could not count terminals", "err", err)
		} else {
			ch <- prometheus.MustNewConstMetric(enrolledDesc, prometheus.GaugeValue, float64(t.Enrolled))
			ch <- prometheus.MustNewConstMetric(onlineDesc, prometheus.GaugeValue, float64(t.Online))
		}
	}
	if c.src.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		u, err := c.src.Store(ctx)
		cancel()
		ch <- up("store", err)
		if err != nil {
			log.Warn("metrics: could not read the store's usage", "err", err)
		} else {
			ch <- prometheus.MustNewConstMetric(usedDesc, prometheus.GaugeValue, float64(u.Used))
			if u.Capacity > 0 {
				ch <- prometheus.MustNewConstMetric(capacityDesc, prometheus.GaugeValue, float64(u.Capacity))
			}
		}
	}
	if c.src.HighWater != nil {
		ch <- prometheus.MustNewConstMetric(highWaterDesc, prometheus.GaugeValue, c.src.HighWater())
	}
	if c.src.WANRate != nil {
		ch <- prometheus.MustNewConstMetric(wanRateDesc, prometheus.GaugeValue, float64(c.src.WANRate()))
	}
}

func up(source string, err error) prometheus.Metric {
	v := 1.0
	if err != nil {
		v = 0
	}
	return prometheus.MustNewConstMetric(sourceErrDesc, prometheus.GaugeValue, v, source)
}

// handlerFor serves reg's series. A scrape is bounded: one at a time per registry is plenty
// for a Prometheus or two, and a slow source cannot hold a connection past the timeout.
func handlerFor(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             20 * time.Second,
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the region's per-request deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func instrument(v *prometheus.CounterVec, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			// r.Pattern is set by the mux on this very request.
			route := r.Pattern
			if route == "" {
				route = otherLabel
			}
			code := sw.status
			if code == 0 {
				code = http.StatusOK
			}
			class := oneOf(string(rune('0'+code/100))+"xx", statusClass)
			v.WithLabelValues(route, class).Inc()
		}()
		h.ServeHTTP(sw, r)
	})
}
