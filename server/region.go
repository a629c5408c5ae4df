// Package server assembles tms's long-running servers from their parts: a region's server (its
// inventory database, image store, HTTP or HTTPS service for agents and peers, with per-route
// deadlines (Deadlines) and connection caps, its Prometheus metrics, and Temporal worker) and
// central's (catalog database, relay storage, HTTP service for health checks and metrics
// (CentralMux), and Temporal worker). `tms region`, `tms central` and `tms dev` run them; tests
// start them in-process.
//
//	r, err := server.StartRegion(ctx, server.RegionOptions{ID: "lab-1", DataDir: dir, Client: c, CentralKey: pub})
//	defer r.Stop(context.Background())
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"tms/activities"
	"tms/agentapi"
	"tms/arrival"
	"tms/bootenv"
	"tms/bootsvc"
	"tms/choose"
	"tms/config"
	"tms/internal/httpdeadline"
	"tms/internal/netlimit"
	"tms/metrics"
	"tms/settings"
	"tms/sibling"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/swarm"
	"tms/transfer"
	"tms/wanrate"
	"tms/workers"
	"tms/workflows"
)

// RegionOptions configure a region's server.
type RegionOptions struct {
	ID      string
	DataDir string // holds inventory.db and, unless Store is set, the store
	// Database is the inventory: "" for DataDir/inventory.db (SQLite), a SQLite path, or a
	// postgres:// URL the region's servers share (region.database).
	Database string
	// DatabaseConnectTimeout bounds how long starting waits for an unreachable PostgreSQL
	// (default state.DefaultConnectTimeout).
	DatabaseConnectTimeout time.Duration
	// Store is the region's image store; nil means a directory store in DataDir/store.
	Store *store.Store
	// Relay is central's relay storage as this region reaches it; nil if none.
	Relay *store.Store
	// Listen is the HTTP service's address (default 127.0.0.1:0, any free port).
	Listen string
	// Endpoint is the URL peers and agents use to reach the HTTP service; default
	// http://<the address it listens on>, https:// with TLS.
	Endpoint string
	// HTTP caps the HTTP service's open connections; zero values mean no cap.
	HTTP config.RegionHTTP
	// TLS, if set, makes the HTTP service HTTPS with this certificate and key.
	TLS config.ServerTLS
	// HTTPIdle is the window of the HTTP service's deadlines (default 30 s): see Deadlines.
	HTTPIdle time.Duration
	Labels   map[string]string
	// Timezone is the IANA zone the region's schedules are written in (config Region.Zone);
	// empty: the server's local zone.
	Timezone string
	// CentralKey is central's public key: it checks the grants central mints for peer pulls and
	// the signatures of the versions the region deploys.
	CentralKey signing.PublicKey
	Client     client.Client
	Log        *slog.Logger
	// NoRegister skips recording the region in central's catalog at start.
	NoRegister bool
	// Wrap, if set, wraps the HTTP service's handler (tests inject faults with it).
	Wrap func(http.Handler) http.Handler
	// Boot is the boot service (DHCP, TFTP, iPXE scripts, Wake-on-LAN); off unless Enabled.
	Boot config.Boot
	// BootPorts overrides the boot service's ports and DHCP listen address (tests).
	BootPorts *bootsvc.ServiceOptions
	// BootHTTPListen overrides region.boot.http_listen (tests: 127.0.0.1:0).
	BootHTTPListen string
	// BootScripts serves the iPXE scripts and the in-memory OS (GET /boot/...) on the HTTP
	// service even without a boot service: tms dev's simulated terminals "network boot" from
	// them (Boot.Enabled serves them anyway).
	BootScripts bool
	// Version is the tms release the server runs, for its status reports.
	Version string
	// ReportInterval is how often the region reports its status to central (default
	// workflows.DefaultReportInterval; config region.report_interval).
	ReportInterval time.Duration
	// Waker wakes terminals when the region has no boot service (tms dev: magic packets to its
	// simulated terminals' loopback port); the boot service's own Waker wins.
	Waker activities.Waker
	// StoreHighWater is the store's high-water mark, a fraction of its capacity
	// (region.store_high_water; 0: the default, 0.9).
	StoreHighWater float64
	// StoreLowWater is what eviction brings the store down to (region.store_low_water; 0: the
	// default, 0.8).
	StoreLowWater float64
	// StoreCapacity is region.store_capacity in bytes (0: the filesystem's size).
	StoreCapacity int64
	// Unicast turns the swarm off (region.unicast): every terminal fetches every chunk from the
	// region.
	Unicast bool
	// Swarm tunes the swarm tracker (tests); zero values take its defaults.
	Swarm swarm.Options
	// MetricsListen, if set (region.metrics_listen), serves GET /metrics on a listener of its
	// own, plain HTTP, instead of on the HTTP service: for admins who firewall it apart.
	MetricsListen string
	// HighWater is the store's high-water mark as a fraction of its capacity
	// (region.store_high_water), read at each scrape; nil leaves tms_store_high_water_ratio out.
	HighWater func() float64
	// OnlineWithin is how recently a terminal must have shown up to count as online in the
	// metrics (default DefaultOnlineWithin).
	OnlineWithin time.Duration
	// WANRate caps the region's WAN transfers, in bytes a second (region.wan_rate; 0: none),
	// and WANRateWindows caps them by time of day (region.wan_rate_windows, canonical or
	// empty). Central's pushes of wan_rate and wan_rate_windows replace them.
	WANRate        int64
	WANRateWindows string
	// WANFollow is how often the WAN cap is looked at again for its time-of-day windows
	// (default a second).
	WANFollow time.Duration
	// ServerID names this server among the region's servers (region.server_id); empty: the
	// host's name. ServerLabels place it in the region (region.server_labels).
	ServerID     string
	ServerLabels map[string]string
	// Heartbeat is how often the server records in the region's database that it is alive,
	// reads which of the region's servers are healthy and whether central pushed settings
	// through another of them (region.heartbeat; default state.DefaultHeartbeat). A server is
	// stale after state.StaleHeartbeats missed heartbeats.
	Heartbeat time.Duration
	// Siblings, if set, lists the region's other healthy servers (the same region id, the same
	// database, a store each), not including this one. Every read of this server's store that
	// finds nothing asks them (package sibling), and agents are told their endpoints so they
	// carry on with one if this server dies. Nil: this server is the region's only one.
	Siblings sibling.Siblings
}

// DefaultOnlineWithin is how recently a terminal must have shown up (its agent's command poll,
// which comes at least every 30 s, a task request, a network boot) to count as online.
const DefaultOnlineWithin = 2 * time.Minute

// Region is a running region server.
type Region struct {
	ID        string
	Store     *store.Store
	Inventory *state.Inventory
	Agents    *agentapi.Server
	Boot      *bootsvc.Service // nil without a boot service
	// Settings are the region's run-time settings: its configuration's values with central's
	// pushes (tms region config set) applied over them.
	Settings *settings.Live
	Metrics  *metrics.Region
	// Arrivals are the versions shares are bringing into Store: the worker's copies announce
	// them and the agent API serves them while they arrive (package arrival).
	Arrivals *arrival.Registry
	// BootEnvs are the versions of the in-memory OS this server materialized from its store
	// (DataDir/bootenvs) and serves.
	BootEnvs *bootenv.Versions
	// WAN paces the region's WAN transfers, all of them together: peer pulls, what its data
	// endpoint serves to other regions, relay uploads and downloads. Its cap follows the
	// settings wan_rate and wan_rate_windows.
	WAN *wanrate.Bucket

	// ServerID names this server among the region's servers; View is its picture of them
	// (which of them answers which terminal's boot), refreshed with every heartbeat.
	ServerID string
	View     *choose.View

	siblings      atomic.Pointer[[]sibling.Sibling] // the other healthy servers, from the registry
	materializing atomic.Bool                       // the current boot environment is being made ready here
	stopWAN       context.CancelFunc
	own           *store.Store // the store under the siblings' read-through; nil without siblings
	stopHeartbeat context.CancelFunc
	heartbeatDone chan struct{}
	self          state.Server
	heartbeat     time.Duration
	bootEnv       atomic.Pointer[string]
	settingsSeen  int64

	endpoint string
	http     *http.Server
	ln       net.Listener
	// bootHTTP serves iPXE its script and the in-memory OS over plain HTTP when the region's
	// service is HTTPS (iPXE cannot check tms's CA); nil otherwise.
	bootHTTP *http.Server
	bootLn   net.Listener
	// metricsHTTP serves /metrics on MetricsListen; nil when /metrics is on the HTTP service.
	metricsHTTP *http.Server
	metricsLn   net.Listener
	worker      worker.Worker
	served      chan error
	log         *slog.Logger
}

// Endpoint is the URL of the region's HTTP service.
func (r *Region) Endpoint() string { return r.endpoint }

// OwnStore is this server's own store, without what its siblings lend (Store reads through to
// them when RegionOptions.Siblings is set): what it holds itself.
func (r *Region) OwnStore() *store.Store {
	if r.own != nil {
		return r.own
	}
	return r.Store
}

// StartRegion opens the region's state, starts its HTTP service and worker, and records the
// region in central's catalog.
func StartRegion(ctx context.Context, o RegionOptions) (_ *Region, err error) {
	if err := state.ValidateRegionID(o.ID); err != nil {
		return nil, err
	}
	if o.Client == nil || o.CentralKey.IsZero() {
		return nil, errors.New("a region server needs a Temporal client and central's public key")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("region", o.ID)
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	r := &Region{ID: o.ID, Store: o.Store, log: log, served: make(chan error, 1)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.Store == nil {
		if r.Store, err = OpenDirStore(ctx, filepath.Join(o.DataDir, "store")); err != nil {
			return nil, err
		}
	}
	if r.ServerID = o.ServerID; r.ServerID == "" {
		if r.ServerID, err = (config.Region{}).ServerIDOrHost(); err != nil {
			return nil, err
		}
	}
	if err := state.ValidateServerID(r.ServerID); err != nil {
		return nil, fmt.Errorf("region.server_id: %w", err)
	}
	if err := state.ValidateLabels("region.server_labels", o.ServerLabels); err != nil {
		return nil, err
	}
	r.heartbeat = o.Heartbeat
	if r.heartbeat <= 0 {
		r.heartbeat = state.DefaultHeartbeat
	}
	r.View = choose.NewView(r.ServerID, 2*state.StaleAfter(r.heartbeat))
	db := o.Database
	if db == "" {
		db = filepath.Join(o.DataDir, "inventory.db")
	}
	if r.Inventory, err = state.OpenInventory(ctx, db, state.WithLogger(log), state.WithConnectTimeout(o.DatabaseConnectTimeout)); err != nil {
		return nil, err
	}
	if r.settingsSeen, err = r.Inventory.SettingsVersion(ctx); err != nil {
		return nil, fmt.Errorf("region %s: %w", o.ID, err)
	}
	if r.Settings, err = loadSettings(ctx, o, r.Inventory, log); err != nil {
		return nil, err
	}
	// The region's sibling secret exists from the first start of any of its servers on.
	secret, err := r.Inventory.SiblingSecret(ctx)
	if err != nil {
		return nil, fmt.Errorf("region %s: %w", o.ID, err)
	}
	own := r.Store.Backend()
	if o.Siblings == nil {
		// The region's other healthy servers, as the registry showed them at the last
		// heartbeat (refreshView): none while this server is the region's only one.
		o.Siblings = r.registrySiblings
	}
	var lend *sibling.Fetcher
	if o.Siblings != nil {
		lend = &sibling.Fetcher{Siblings: o.Siblings, Secret: secret, CentralKey: o.CentralKey, HTTP: &http.Client{},
			Log: log.With("part", "sibling")}
		r.own = r.Store
		r.Store = store.New(sibling.ReadThrough(own, lend), store.Options{Log: log.With("part", "store")})
	}
	// The boot service starts with the effective values (central's pushes included).
	live := r.Settings.Values()
	o.Boot.DHCPUnknownPerMAC, o.Boot.DHCPUnknownTotal = live.DHCPUnknownPerMAC, live.DHCPUnknownTotal
	if o.HighWater == nil {
		o.HighWater = r.StoreHighWater
	}
	r.startWAN(o.WANFollow, log)
	r.Metrics = regionMetrics(r.Inventory, r.Store, o, r.WAN.Rate, log)
	if lend != nil {
		lend.Metrics = r.Metrics
	}
	r.Arrivals = &arrival.Registry{}
	r.BootEnvs = &bootenv.Versions{Store: r.Store, Dir: filepath.Join(o.DataDir, "bootenvs"), CentralKey: o.CentralKey, Log: log.With("part", "bootenvs")}
	r.Agents = &agentapi.Server{Inventory: r.Inventory, Store: r.Store, Waiters: activities.AgentWaiters{Client: o.Client}, Log: log,
		Metrics: r.Metrics, Arrivals: r.Arrivals}
	if !o.Unicast {
		r.Agents.Swarm = swarm.NewTracker(o.Swarm)
	}
	if o.Siblings != nil {
		r.Agents.Servers = func(ctx context.Context) ([]string, error) {
			list, err := o.Siblings(ctx)
			eps := make([]string, 0, len(list))
			for _, sb := range list {
				eps = append(eps, sb.Endpoint)
			}
			return eps, err
		}
	}

	listen := o.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	var cert tls.Certificate
	if o.TLS.Enabled() {
		if cert, err = tls.LoadX509KeyPair(o.TLS.CertFile, o.TLS.KeyFile); err != nil {
			return nil, fmt.Errorf("region.tls: %w", err)
		}
	}
	if r.ln, err = net.Listen("tcp", listen); err != nil {
		return nil, fmt.Errorf("region %s: HTTP service: %w", o.ID, err)
	}
	scheme := "http"
	if o.TLS.Enabled() {
		scheme = "https"
	}
	r.endpoint = o.Endpoint
	if r.endpoint == "" {
		r.endpoint = scheme + "://" + r.ln.Addr().String()
	}
	// This server joins the region's registry before it serves anything: a second server with
	// the same id refuses to start while the first is healthy.
	r.self = state.Server{ID: r.ServerID, Labels: o.ServerLabels, Endpoint: r.endpoint, Version: o.Version, Started: time.Now().UTC()}
	if o.Boot.Enabled {
		r.self.BootAddr, r.self.DHCP = o.Boot.Address, o.Boot.DHCP
		if r.self.DHCP == "" {
			r.self.DHCP = "proxy"
		}
	}
	// Checked before this server claims its id, so that a refused full-mode server never shows
	// in the registry as a second one.
	if o.Boot.Enabled && r.self.DHCP == "full" {
		if err := r.fullDHCPAlone(ctx); err != nil {
			return nil, fmt.Errorf("region %s: boot service (region.boot.dhcp): %w", o.ID, err)
		}
	}
	if err := r.claim(ctx, o.DataDir); err != nil {
		return nil, fmt.Errorf("region %s: %w", o.ID, err)
	}
	if lend != nil {
		lend.From = r.ServerID
	}
	if inClear(r.ln.Addr(), o.TLS.Enabled()) {
		log.Warn("the HTTP service is plain HTTP on a network address: agent tokens and images travel in clear; set region.tls.cert_file and region.tls.key_file",
			"listen", r.ln.Addr().String())
	}
	// Over-cap connections are closed before a TLS handshake costs anything.
	ln := net.Listener(netlimit.Listen(r.ln, netlimit.Options{PerIP: o.HTTP.MaxConnsPerIP, Total: o.HTTP.MaxConns,
		Log: log.With("service", "http")}))
	if o.TLS.Enabled() {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"}})
	}
	mux := http.NewServeMux()
	(&transfer.Handler{Store: r.Store, Region: o.ID, CentralKey: o.CentralKey, Log: log,
		Meter: r.Metrics.Flow(metrics.PathPeer, metrics.Out), Limit: r.WAN}).Routes(mux)
	r.Agents.Routes(mux)
	// Siblings are served this server's own store only (never read through), so two that lack
	// an object do not ask each other in a circle.
	(&sibling.Handler{Backend: own, Secret: secret, Mailbox: r.Agents, Log: log.With("part", "sibling")}).Routes(mux)
	if o.MetricsListen == "" {
		mux.Handle("GET /metrics", r.Metrics.Handler())
	} else if err := r.serveMetrics(o.MetricsListen); err != nil {
		return nil, fmt.Errorf("region %s: metrics (region.metrics_listen): %w", o.ID, err)
	}
	waker := o.Waker
	// The terminals' segment, for power-on's refusals: validated with the config; a subnet
	// that does not parse refuses nothing.
	var segment netip.Prefix
	if st, err := o.Boot.Settings(); err == nil {
		segment = st.Subnet
	}
	if o.Boot.Enabled {
		so := bootsvc.ServiceOptions{Boot: o.Boot, Inventory: r.Inventory, Claims: r.Agents, Endpoint: r.endpoint, DataDir: o.DataDir, Log: log.With("service", "boot"),
			Metrics: r.Metrics, BootEnvs: r.BootEnvs}
		bootMux := mux
		if o.TLS.Enabled() {
			// iPXE gets its script and the in-memory OS over plain HTTP on a listener of their
			// own; the script sends the agent to the HTTPS endpoint.
			if so.Endpoint, err = r.listenBoot(o); err != nil {
				return nil, err
			}
			so.AgentEndpoint = r.endpoint
			bootMux = http.NewServeMux()
		}
		if p := o.BootPorts; p != nil {
			so.DHCPPort, so.ProxyPort, so.TFTPPort, so.ListenIP = p.DHCPPort, p.ProxyPort, p.TFTPPort, p.ListenIP
		}
		// In proxy mode every server of the region hears a PC's DHCPDISCOVER: only the one
		// chosen for it answers (package choose). The scripts and files over HTTP stay open
		// to every PC, on every server: a PC may have kept an earlier offer.
		so.Answer = r.View.Answer
		if r.Boot, err = bootsvc.StartService(ctx, so); err != nil {
			return nil, fmt.Errorf("region %s: boot service: %w", o.ID, err)
		}
		r.Boot.Routes(bootMux)
		if bootMux != mux {
			r.bootHTTP = &http.Server{Handler: httpdeadline.Handler(r.Metrics.Instrument(bootMux), Deadlines(bootMux, o.HTTPIdle)), ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.With("service", "boot-http").Handler(), slog.LevelDebug)}
			bootSrv, bootLn := r.bootHTTP, net.Listener(netlimit.Listen(r.bootLn, netlimit.Options{PerIP: o.HTTP.MaxConnsPerIP,
				Total: o.HTTP.MaxConns, Log: log.With("service", "boot-http")}))
			go func() {
				if err := bootSrv.Serve(bootLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
					r.served <- fmt.Errorf("boot HTTP service: %w", err)
				}
			}()
		}
		// A terminal's network boot into a task stands unchallenged this long before its
		// result is taken (agentapi.Server.Quiet).
		r.Agents.Quiet = o.Boot.ClaimQuiet
		r.Agents.QuietFunc = r.Settings.ClaimQuiet
		boot := r.Boot
		r.Settings.OnChange(func(v settings.Values) { boot.SetDHCPLimits(v.DHCPUnknownPerMAC, v.DHCPUnknownTotal) })
		waker = r.Boot.Waker
	} else if o.BootScripts {
		dir := o.Boot.Dir
		if dir == "" {
			dir = filepath.Join(o.DataDir, "bootenv")
		}
		(&bootsvc.Scripts{Inventory: r.Inventory, Claims: r.Agents, Endpoint: r.endpoint, BootDir: dir, Args: o.Boot.KernelArgs,
			BootEnvs: r.BootEnvs, Log: log.With("service", "boot-scripts")}).Routes(mux)
	}
	h := r.Metrics.Instrument(mux)
	if o.Wrap != nil {
		h = o.Wrap(h)
	}
	h = httpdeadline.Handler(h, Deadlines(mux, o.HTTPIdle))
	// ReadHeaderTimeout also bounds the TLS handshake. No ReadTimeout or WriteTimeout: the
	// deadlines above follow each request's progress instead. HTTP/1.1 only (an empty
	// TLSNextProto turns HTTP/2 off): a connection carries one request at a time, so the
	// connection caps bound requests too.
	// Failed TLS handshakes and the like are any network's noise: debug level.
	r.http = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(log.With("service", "http").Handler(), slog.LevelDebug)}
	go func() { r.served <- r.http.Serve(ln) }()

	acts := &activities.Region{ID: o.ID, Store: r.Store, Relay: o.Relay,
		HTTP: &http.Client{Timeout: 5 * time.Minute}, CentralKey: o.CentralKey, Inventory: r.Inventory, Agents: r.Agents, Waker: waker,
		Mailbox: r.Agents, Segment: segment, WakeTimeout: o.Boot.WakeTimeout, Version: o.Version, ReportInterval: o.ReportInterval,
		Settings: r.Settings, Metrics: r.Metrics, Usage: r.storeUsage, StoreCapacity: o.StoreCapacity, Log: log.With("part", "store"),
		Arrivals: r.Arrivals, WAN: r.WAN, ServerStaleAfter: state.StaleAfter(r.heartbeat), BootEnvs: r.BootEnvs}
	if lend != nil {
		acts.Siblings = lend
	}
	// The picture of the region's servers comes before the first task: a task this server takes
	// at once must already find what its siblings hold.
	r.startHeartbeat(log)
	r.worker = workers.NewRegionServer(o.Client, acts, r.ServerID)
	if err := r.worker.Start(); err != nil {
		return nil, fmt.Errorf("region %s: worker: %w", o.ID, err)
	}
	if !o.NoRegister {
		if err := register(ctx, o.Client, activities.RegionInfo{ID: o.ID, Labels: o.Labels, Endpoint: r.endpoint, Timezone: r.Settings.Timezone()}); err != nil {
			return nil, fmt.Errorf("region %s: registering with central: %w", o.ID, err)
		}
	}
	log.Info("region server started", "server", r.ServerID, "endpoint", r.endpoint, "store", r.Store.String())
	return r, nil
}

// MetricsURL is where the region serves its metrics: on the HTTP service, or on
// region.metrics_listen.
func (r *Region) MetricsURL() string {
	if r.metricsLn != nil {
		return "http://" + r.metricsLn.Addr().String() + "/metrics"
	}
	return r.endpoint + "/metrics"
}

// regionMetrics makes the region's series, reading its terminals and store at scrape time.
func regionMetrics(inv *state.Inventory, st *store.Store, o RegionOptions, wanRate func() int64, log *slog.Logger) *metrics.Region {
	within := o.OnlineWithin
	if within <= 0 {
		within = DefaultOnlineWithin
	}
	return metrics.NewRegion(metrics.RegionSources{
		Terminals: func(ctx context.Context) (metrics.Terminals, error) {
			c, err := inv.CountTerminals(ctx, time.Now().Add(-within))
			return metrics.Terminals{Enrolled: c.Enrolled, Online: c.Online}, err
		},
		Store: func(ctx context.Context) (metrics.StoreUsage, error) {
			u, err := st.Usage(ctx)
			return metrics.StoreUsage{Used: u.Used, Capacity: activities.EffectiveCapacity(u.Capacity, o.StoreCapacity)}, err
		},
		HighWater: o.HighWater,
		WANRate:   wanRate,
		Log:       log,
	})
}

// startWAN makes the region's WAN bucket with the cap in force, and keeps its cap the settings'
// own: at once when central pushes wan_rate or wan_rate_windows (or the timezone the windows
// are read in), and every follow (default a second) for the windows' times of day.
func (r *Region) startWAN(follow time.Duration, log *slog.Logger) {
	if follow <= 0 {
		follow = time.Second
	}
	wan := wanrate.NewBucket(r.Settings.WANRateAt(time.Now()), nil)
	r.WAN = wan
	r.Settings.OnChange(func(v settings.Values) {
		if rate := v.WANRateAt(time.Now()); rate != wan.Rate() {
			wan.SetRate(rate)
			log.Info("WAN rate cap changed", "cap", settings.FormatRate(rate))
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWAN = cancel
	go wan.Follow(ctx, r.Settings.WANRateAt, follow, nil)
}

// serveMetrics serves GET /metrics alone on addr. The series hold no secret (see package
// metrics), so it is plain HTTP without a token; an admin who wants it closed firewalls addr.
func (r *Region) serveMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	r.metricsLn = ln
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.Metrics.Handler())
	r.metricsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(r.log.With("service", "metrics").Handler(), slog.LevelDebug)}
	srv := r.metricsHTTP
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.served <- fmt.Errorf("metrics service: %w", err)
		}
	}()
	return nil
}

// inClear reports whether a service listening on addr sends agent tokens where others can
// read them: without TLS, on anything but loopback (a wildcard address included).
func inClear(addr net.Addr, withTLS bool) bool {
	a, ok := addr.(*net.TCPAddr)
	return !withTLS && !(ok && a.AddrPort().Addr().Unmap().IsLoopback())
}

// register records the region in central's catalog through the central worker.
func register(ctx context.Context, c client.Client, info activities.RegionInfo) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       "region/" + info.ID + "/register",
		TaskQueue:                activities.CentralQueue,
		WorkflowExecutionTimeout: 2 * time.Minute,
	}, workflows.RegisterRegion, info)
	if err != nil {
		return err
	}
	err = run.Get(ctx, nil)
	if ctx.Err() != nil {
		return fmt.Errorf("central did not answer within 2 minutes: is the central worker running?")
	}
	return err
}

// Wait returns when the HTTP service or the boot service stops by itself (an error) or ctx
// ends.
func (r *Region) Wait(ctx context.Context) error {
	var bootErr <-chan error
	if r.Boot != nil {
		bootErr = r.Boot.Err()
	}
	select {
	case err := <-r.served:
		return fmt.Errorf("region %s: HTTP service stopped: %w", r.ID, err)
	case err := <-bootErr:
		return fmt.Errorf("region %s: boot service stopped: %w", r.ID, err)
	case <-ctx.Done():
		return nil
	}
}

// Stop stops the worker (letting running activities finish or heartbeat out), then the HTTP
// service, within ctx, and closes the databases.
func (r *Region) Stop(ctx context.Context) error {
	if r.worker != nil {
		r.worker.Stop()
		r.worker = nil
	}
	var err error
	if r.http != nil {
		err = r.http.Shutdown(ctx)
		r.http = nil
	}
	if r.bootHTTP != nil {
		err = errors.Join(err, r.bootHTTP.Shutdown(ctx))
		r.bootHTTP = nil
	}
	if r.metricsHTTP != nil {
		err = errors.Join(err, r.metricsHTTP.Shutdown(ctx))
		r.metricsHTTP = nil
	}
	r.close()
	return err
}

// Kill stops the server as a crash would, for tests of the region's other servers: every
// connection is cut at once (agents see their requests fail mid-answer), the worker stops
// taking tasks, and the databases close.
func (r *Region) Kill() {
	for _, srv := range []**http.Server{&r.http, &r.bootHTTP, &r.metricsHTTP} {
		if *srv != nil {
			(*srv).Close()
			*srv = nil
		}
	}
	if r.worker != nil {
		r.worker.Stop() // a crashed worker takes no more tasks either
		r.worker = nil
	}
	r.close()
}

func (r *Region) close() {
	if r.stopHeartbeat != nil {
		r.stopHeartbeat()
		<-r.heartbeatDone
		r.stopHeartbeat = nil
	}
	if r.stopWAN != nil {
		r.stopWAN()
		r.stopWAN = nil
	}
	if r.Boot != nil {
		r.Boot.Stop()
		r.Boot = nil
	}
	if r.ln != nil {
		r.ln.Close()
	}
	if r.bootLn != nil {
		r.bootLn.Close()
	}
	if r.metricsLn != nil {
		r.metricsLn.Close()
	}
	if r.Inventory != nil {
		r.Inventory.Close()
	}
}

// listenBoot opens the plain-HTTP listener iPXE reaches the boot service on, when the region's
// service is HTTPS, and returns its URL as terminals reach it.
func (r *Region) listenBoot(o RegionOptions) (string, error) {
	addr := o.BootHTTPListen
	if addr == "" {
		addr = o.Boot.HTTPListen
	}
	if addr == "" {
		addr = net.JoinHostPort(o.Boot.Address, "8380")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("region %s: boot HTTP service (region.boot.http_listen): %w", o.ID, err)
	}
	r.bootLn = ln
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	host := a.Addr().Unmap().String()
	if a.Addr().IsUnspecified() {
		host = o.Boot.Address // what terminals reach
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(int(a.Port()))), nil
}

// OpenDirStore opens the directory store at dir, creating it if needed.
func OpenDirStore(ctx context.Context, dir string) (*store.Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	b, err := store.NewDirWith(dir, store.DirOptions{Packs: true})
	if err != nil {
		return nil, err
	}
	s := store.New(b, store.Options{})
	if err := s.Init(ctx); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return s, nil
}

// StoreHighWater is the store's high-water mark, a fraction of its capacity: the live value of
// the run-time setting store_high_water.
func (r *Region) StoreHighWater() float64 { return r.Settings.StoreHighWater() }

// loadSettings builds the region's run-time settings from its options (its configuration
// file's values) and applies over them the overrides central pushed, kept in the inventory. An
// override this tms no longer accepts (its bounds narrowed) is left out, with a warning.
func loadSettings(ctx context.Context, o RegionOptions, inv *state.Inventory, log *slog.Logger) (*settings.Live, error) {
	defaults := settings.Defaults()
	defaults.Timezone = config.LocalZone()
	base := settings.Values{Timezone: zone(o.Timezone), WakeTimeout: o.Boot.WakeTimeout, ClaimQuiet: o.Boot.ClaimQuiet,
		DHCPUnknownPerMAC: o.Boot.DHCPUnknownPerMAC, DHCPUnknownTotal: o.Boot.DHCPUnknownTotal, StoreHighWater: o.StoreHighWater, StoreLowWater: o.StoreLowWater,
		WANRate: o.WANRate, WANRateWindows: o.WANRateWindows}
	live := settings.NewLive(base, defaults)
	overrides, err := inv.Settings(ctx)
	if err != nil {
		return nil, fmt.Errorf("region %s: run-time settings: %w", o.ID, err)
	}
	for _, s := range overrides {
		if s.Key == state.SettingBootEnv {
			continue // the region's in-memory OS, which rollouts set (package bootenv)
		}
		if _, err := live.Set(s.Key, s.Value, settings.Source{Kind: settings.SourcePushed, By: s.SetBy, At: s.SetAt, Task: s.Task}); err != nil {
			log.Warn("a setting central pushed is left out: this tms does not accept it", "key", s.Key, "value", s.Value, "err", err)
		}
	}
	return live, nil
}

// zone is the time zone a region reports: the configured one, else the server's local zone.
func zone(tz string) string {
	if tz != "" {
		return tz
	}
	return config.LocalZone()
}

// storeUsage is the region's store's used bytes and capacity, for its status reports.
func (r *Region) storeUsage(ctx context.Context) (used, capacity int64, err error) {
	u, err := r.Store.Usage(ctx)
	return u.Used, u.Capacity, err
}

// BootEnvStatus is the in-memory OS a region server serves: the region's current version
// (empty: none, its terminals boot the plain boot directory) and whether this server has it
// ready (it materializes it when a terminal first asks otherwise).
type BootEnvStatus struct {
	Current string
	Ready   bool
}

// BootEnv reports the in-memory OS this server serves, for its status rows (a region with
// several servers reports one row each).
func (r *Region) BootEnv(ctx context.Context) (BootEnvStatus, error) {
	s, err := r.Inventory.CurrentBootEnv(ctx)
	if err != nil || s.Value == "" {
		return BootEnvStatus{}, err
	}
	_, ok, err := r.BootEnvs.Materialized(s.Value)
	return BootEnvStatus{Current: s.Value, Ready: ok}, err
}
