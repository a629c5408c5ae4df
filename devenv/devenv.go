// Package devenv runs all of tms on one machine, in one process: an embedded Temporal server
// with its UI, the central server, regional servers with their own stores, databases and HTTP
// services on loopback, and simulated terminals — the real agent, each with a disk file. It is
// what `tms dev` runs and what end-to-end tests start.
//
//	env, err := devenv.Start(ctx, devenv.Options{DataDir: dir})
//	defer env.Stop()
//	fmt.Println(env.TemporalAddress(), env.UIAddress())
//
// Everything lives under DataDir: starting again on the same directory continues where the
// last run stopped (workflows resume, stores and databases are kept, disks keep their bytes).
//
// With Options.StartTerminal the terminals are started by the caller instead, for example as
// tms-agent processes in network namespaces (package internal/classroom): devenv still creates,
// enrolls and groups them, and calls the hook whenever one is switched on or woken.
package devenv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tms/agent"
	"tms/auth/temporalauth"
	"tms/bootenv"
	"tms/bootsvc"
	"tms/centralapi"
	"tms/config"
	"tms/devtemporal"
	"tms/internal/atomicfile"
	"tms/internal/ctxtime"
	"tms/internal/sampledisk"
	"tms/server"
	"tms/signing"
	"tms/state"
	"tms/store"
)

// Options configure a development environment.
type Options struct {
	DataDir string
	// Host is the loopback address everything listens on (default 127.0.0.1).
	Host string
	// TemporalPort and UIPort: 0 means 7233 and 8233; -1 means any free port.
	TemporalPort, UIPort int
	// CentralPort is central's HTTP port (/healthz, /metrics, login, users): 0 means 8300; -1
	// means any free port.
	CentralPort int
	// RegionPortBase is the first regional HTTP port (default 8301, one per region); -1 means
	// any free ports.
	RegionPortBase int
	// Auth installs tms's authorizer on the Temporal frontend (package auth/temporalauth):
	// every call then needs a token. Central's worker and each region's worker get worker
	// tokens minted with central's key (a region's scoped to its own queues), and central gets
	// a first admin, "admin", whose password is generated on the first start and kept in
	// DataDir/admin-password (Env.AdminPassword). Without Auth, everyone may do everything.
	Auth bool
	// Regions are the region ids (default region-a and region-b).
	Regions []string
	// Terminals is the number of simulated terminals per region (default 3); -1 means none.
	Terminals int
	// DiskSize is the size of each simulated terminal's disk (default 64 MiB).
	DiskSize int64
	Log      *slog.Logger
	// Version is the tms release the regions report (tms status).
	Version string
	// ReportInterval is how often each region reports its status (default 15 s).
	ReportInterval time.Duration
	// TemporalLog receives the embedded server's own log (default: warnings and errors to Log).
	TemporalLevel slog.Level
	// Segment is the regions' boot segment, where their terminals are (default DevSegment,
	// loopback): power on refuses a terminal last seen outside it. A lab whose terminals are
	// processes in network namespaces sets the lab's subnet.
	Segment string
	// StartTerminal, if set, switches a terminal on instead of the in-process agent: devenv
	// creates the terminals as usual (disks, enrolment, agent keys, group "lab"; every disk
	// empty, the key also in Terminal.KeyFile) and calls StartTerminal once for each at start
	// and again whenever a magic packet wakes one that is off. It returns when the terminal is
	// off again (its agent process ended); devenv cancels ctx to switch it off (StopAgent,
	// Stop). It runs in a goroutine of its own; an error is logged.
	StartTerminal func(ctx context.Context, t Terminal) error
	// Unicast makes the regions serve every chunk of a deploy themselves, no swarm (the
	// terminals do not fetch chunks from each other). Until the swarm lands it changes nothing.
	Unicast bool
	// StoreCapacity is each region's store capacity in bytes (region.store_capacity; 0: its
	// filesystem's), so a small store and its eviction can be shown.
	StoreCapacity int64
	// StoreCapacityOf overrides StoreCapacity for the regions it names.
	StoreCapacityOf map[string]int64
	// PlannerInterval is how often central's schedule planner looks at the schedules
	// (default workflows.PlannerInterval).
	PlannerInterval time.Duration
	// NetBoot makes the simulated terminals network boot as PCs do before their agent runs:
	// each boot asks the region's boot HTTP service for the terminal's iPXE script and, when
	// it boots the in-memory OS, fetches and checks the kernel and initrd it names (netboot.go).
	// The regions then serve scripts without a boot service (RegionOptions.BootScripts).
	NetBoot bool
	// WANRateOf caps the WAN transfers of the regions it names, in bytes a second
	// (region.wan_rate), so a share takes a WAN's time on loopback.
	WANRateOf map[string]int64
	// RegionOptions, if set, may change each region's server options before it starts (a lab
	// test turns a region's boot service on, or gives it a shared database).
	RegionOptions func(id string, o *server.RegionOptions)
	// Database, if set, gives each server's state database: central's for "central", a
	// region's for its id (server.CentralOptions.Database, RegionOptions.Database). "" (or a
	// nil Database) keeps the SQLite file in the server's DataDir. A restart on the same
	// DataDir must be given the same databases. Tests pass pgtest.StateFunc(t).
	Database func(server string) string
}

// database is o.Database(server), or "" without one.
func (o Options) database(server string) string {
	if o.Database == nil {
		return ""
	}
	return o.Database(server)
}

// Terminal is a simulated terminal.
type Terminal struct {
	Region string
	Name   string
	MAC    string
	Disk   string
	// Endpoint is the URL of its region's HTTP service, where its agent goes.
	Endpoint string
	// KeyFile holds its agent key as tms-agent --key-file reads it (Options.StartTerminal
	// only; empty otherwise).
	KeyFile string
	key     []byte // its agent key, as the agent service of an installed OS keeps it
}

// Key returns the terminal's agent key.
func (t Terminal) Key() []byte { return append([]byte(nil), t.key...) }

// Env is a running development environment.
type Env struct {
	Temporal *devtemporal.Server
	Client   client.Client
	Central  *server.Central
	Regions  map[string]*server.Region
	// RegionIDs in the order they were started.
	RegionIDs []string
	Terminals []Terminal
	Namespace string
	// CentralKey is the public key of central's signing key (DataDir/central.key).
	CentralKey signing.PublicKey
	// CentralKeyFile holds CentralKey in its text form (DataDir/central.pub), as tms-agent
	// --central-key and the in-memory OS read it.
	CentralKeyFile string
	// AdminPassword is the first admin's password (Options.Auth), as DataDir/admin-password
	// keeps it; AdminCreated says whether this start created the admin.
	AdminPassword string
	AdminCreated  bool

	key          *signing.PrivateKey
	centralOpts  server.CentralOptions
	regionClient map[string]client.Client
	uiProxy      string // the login page in front of the UI, host:port (Auth)
	centralAPI   *centralapi.Handler
	stopUI       func()
	// The authorizer's client, for lookups (made on first use, from the server's goroutines).
	lookupMu      sync.Mutex
	lookupClient  client.Client
	lookupStopped bool
	temporalAddr  atomic.Pointer[string]

	wakeTargets  map[string]netip.AddrPort // by region: where its simulated terminals hear magic packets
	cancelAgents context.CancelFunc
	agents       sync.WaitGroup
	agentCtl     map[string]context.CancelFunc // by MAC, while the terminal is on
	agentGen     map[string]int                // by MAC: which start of the terminal is running
	unplugged    map[string]bool               // by MAC: stopped by StopAgent; magic packets do not wake it
	agentsCtx    context.Context               // ended by Stop
	agentMu      sync.Mutex
	opts         Options
	log          *slog.Logger
}

func (o *Options) defaults() {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	switch o.TemporalPort {
	case 0:
		o.TemporalPort = 7233
	case -1:
		o.TemporalPort = 0
	}
	switch o.UIPort {
	case 0:
		o.UIPort = 8233
	case -1:
		o.UIPort = 0
	}
	switch o.CentralPort {
	case 0:
		o.CentralPort = 8300
	case -1:
		o.CentralPort = 0
	}
	if o.RegionPortBase == 0 {
		o.RegionPortBase = 8301
	}
	if len(o.Regions) == 0 {
		o.Regions = []string{"region-a", "region-b"}
	}
	switch o.Terminals {
	case 0:
		o.Terminals = 3
	case -1:
		o.Terminals = 0
	}
	if o.DiskSize == 0 {
		o.DiskSize = 64 << 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.TemporalLevel == 0 {
		o.TemporalLevel = slog.LevelWarn
	}
	if o.Segment == "" {
		o.Segment = DevSegment
	}
}

// Start starts everything. On error, what was started is stopped again.
func Start(ctx context.Context, o Options) (_ *Env, err error) {
	o.defaults()
	if o.DataDir == "" {
		return nil, errors.New("devenv: a data directory is required")
	}
	if o.DiskSize < 4<<20 || o.DiskSize%4096 != 0 {
		return nil, fmt.Errorf("terminal disk size %d: want at least 4 MiB and a multiple of 4 KiB", o.DiskSize)
	}
	for _, id := range o.Regions {
		if err := state.ValidateRegionID(id); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	e := &Env{Regions: map[string]*server.Region{}, wakeTargets: map[string]netip.AddrPort{}, Namespace: "default", opts: o, log: o.Log, agentCtl: map[string]context.CancelFunc{},
		agentGen: map[string]int{}, unplugged: map[string]bool{}}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()

	// Central's signing key: it signs the versions central registers, the grants it mints and
	// (with Auth) every token; the regions and the simulated terminals' agents get its public half.
	key, err := signing.LoadOrCreateKeyFile(filepath.Join(o.DataDir, "central.key"))
	if err != nil {
		return nil, err
	}
	e.key, e.CentralKey = key, key.Public()
	e.CentralKeyFile = filepath.Join(o.DataDir, "central.pub")
	if err := atomicfile.Write(e.CentralKeyFile, strings.NewReader(e.CentralKey.String()+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("central's public key: %w", err)
	}
	e.regionClient = map[string]client.Client{}
	to := devtemporal.Options{DataDir: filepath.Join(o.DataDir, "temporal"), Host: o.Host,
		Port: o.TemporalPort, UIPort: o.UIPort, Log: o.Log, Level: o.TemporalLevel}
	if o.Auth {
		a := temporalauth.New(temporalauth.Options{Key: key.Public(), Lookup: e.authLookup(), Log: o.Log})
		to.Authorizer, to.ClaimMapper = a, a
		if o.UIPort != 0 {
			// The UI moves to a port of its own; a login page in front of it takes its port
			// (startUIProxy), for browsers, which cannot send a token.
			if to.UIPort, err = freePort(o.Host); err != nil {
				return nil, err
			}
		}
	}
	e.Temporal, err = devtemporal.Start(to)
	if err != nil {
		return nil, err
	}
	addr := e.Temporal.Address()
	e.temporalAddr.Store(&addr)
	e.Client, err = e.dial(ctx, "central", nil)
	if err != nil {
		return nil, err
	}
	if err := e.registerSearchAttributes(ctx); err != nil {
		return nil, err
	}
	relay, err := server.OpenDirStore(ctx, filepath.Join(o.DataDir, "central", "relay"))
	if err != nil {
		return nil, err
	}
	e.centralOpts = server.CentralOptions{DataDir: filepath.Join(o.DataDir, "central"), Database: o.database("central"), Relay: relay,
		Key: key, Client: e.Client, Log: o.Log, Listen: net.JoinHostPort(o.Host, strconv.Itoa(o.CentralPort)),
		Routes: []func(*http.ServeMux, *server.Central){e.centralRoutes}, PlannerInterval: o.PlannerInterval}
	e.Central, err = server.StartCentral(ctx, e.centralOpts)
	if err != nil {
		return nil, err
	}
	if err := e.firstAdmin(ctx); err != nil {
		return nil, err
	}
	if o.Auth && o.UIPort != 0 {
		if err := e.startUIProxy(); err != nil {
			return nil, err
		}
	}
	e.agentsCtx, e.cancelAgents = context.WithCancel(context.Background())
	for i, id := range o.Regions {
		waker, err := e.listenMagic(id)
		if err != nil {
			return nil, err
		}
		e.wakeTargets[id] = waker.Target
		listen := o.Host + ":0"
		if o.RegionPortBase > 0 {
			listen = fmt.Sprintf("%s:%d", o.Host, o.RegionPortBase+i)
		}
		rc := e.Client
		if o.Auth {
			// Each region's worker presents a token scoped to its own region, as a
			// production region's (tms region token) is.
			w := centralapi.RegionWorker(id)
			if rc, err = e.dial(ctx, w.Subject, w.Regions); err != nil {
				return nil, err
			}
			e.regionClient[id] = rc
		}
		if o.NetBoot {
			// The plain boot directory, what terminals boot while nothing is published: a
			// sample the simulated network boot accepts (tms bootenv build makes real ones).
			dir := filepath.Join(o.DataDir, id, "bootenv")
			if _, err := os.Stat(filepath.Join(dir, bootenv.KernelFile)); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, err
				}
				if err := bootenv.WriteSample(dir, "6.12.0-tms-dev"); err != nil {
					return nil, fmt.Errorf("region %s: sample boot directory: %w", id, err)
				}
			}
		}
		ro := server.RegionOptions{ID: id, DataDir: filepath.Join(o.DataDir, id), Database: o.database(id), Relay: relay,
			Listen: listen, Labels: map[string]string{"site": "dev"}, CentralKey: e.CentralKey, Client: rc, Log: o.Log,
			Waker: waker, Boot: config.Boot{Subnet: o.Segment}, Version: o.Version, ReportInterval: o.ReportInterval,
			Unicast: o.Unicast, StoreCapacity: cmp.Or(o.StoreCapacityOf[id], o.StoreCapacity), BootScripts: o.NetBoot,
			WANRate: o.WANRateOf[id]}
		if o.RegionOptions != nil {
			o.RegionOptions(id, &ro)
		}
		r, err := server.StartRegion(ctx, ro)
		if err != nil {
			return nil, err
		}
		e.Regions[id] = r
		e.RegionIDs = append(e.RegionIDs, id)
	}
	if err := e.addTerminals(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// TemporalAddress is the Temporal frontend's host:port.
func (e *Env) TemporalAddress() string { return e.Temporal.Address() }

// UIAddress is the Temporal UI's host:port.
func (e *Env) UIAddress() string {
	if e.uiProxy != "" {
		return e.uiProxy
	}
	return e.Temporal.UIAddress()
}

// terminalPrefix names a region's terminals: "a" for region-a, the id itself otherwise.
func terminalPrefix(region string) string {
	if s, ok := strings.CutPrefix(region, "region-"); ok && s != "" {
		return s
	}
	return region
}

// addTerminals creates (first run) or finds the simulated terminals, enrolls them, puts each
// region's terminals in a group "lab", and starts their agents. The first terminal of the first
// region starts with a sample disk, the others with empty disks.
func (e *Env) addTerminals(ctx context.Context) error {
	agentsCtx := e.agentsCtx
	for ri, id := range e.RegionIDs {
		r := e.Regions[id]
		dir := filepath.Join(e.opts.DataDir, id, "terminals")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if e.opts.Terminals > 0 {
			if err := r.Inventory.CreateGroup(ctx, "lab"); err != nil && !errors.Is(err, state.ErrConflict) {
				return err
			}
		}
		for n := range e.opts.Terminals {
			t := Terminal{Region: id, Name: fmt.Sprintf("%s-pc%d", terminalPrefix(id), n+1),
				MAC: fmt.Sprintf("52:54:00:%02x:00:%02x", ri+1, n+1), Endpoint: r.Endpoint()}
			t.Disk = filepath.Join(dir, t.Name+".disk")
			if _, err := os.Stat(t.Disk); errors.Is(err, os.ErrNotExist) {
				if ri == 0 && n == 0 && e.opts.StartTerminal == nil {
					err = sampledisk.Write(t.Disk, sampledisk.Options{Size: e.opts.DiskSize, Seed: 1})
				} else {
					err = emptyDisk(t.Disk, e.opts.DiskSize)
				}
				if err != nil {
					return fmt.Errorf("terminal %s: disk: %w", t.Name, err)
				}
			} else if err != nil {
				return err
			}
			if err := r.Inventory.Enroll(ctx, t.MAC, t.Name); err != nil {
				return err
			}
			if err := r.Inventory.AddToGroup(ctx, "lab", t.Name); err != nil {
				return err
			}
			key, err := r.Inventory.AgentKey(ctx, t.MAC)
			if errors.Is(err, store.ErrNotFound) {
				key, err = r.Inventory.IssueAgentKey(ctx, t.MAC)
			}
			if err != nil {
				return fmt.Errorf("terminal %s: agent key: %w", t.Name, err)
			}
			t.key = key
			if e.opts.StartTerminal != nil {
				t.KeyFile = filepath.Join(dir, t.Name+".key")
				if err := atomicfile.Write(t.KeyFile, strings.NewReader(agent.FormatKey(key)), 0o600); err != nil {
					return fmt.Errorf("terminal %s: agent key file: %w", t.Name, err)
				}
			}
			e.agentMu.Lock() // a resumed task may wake terminals already
			e.Terminals = append(e.Terminals, t)
			e.agentMu.Unlock()
			e.startAgent(agentsCtx, t)
		}
	}
	return nil
}

func emptyDisk(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// DevSegment is the boot segment of tms dev's regions: loopback, where the simulated terminals
// are. A terminal last seen elsewhere is refused by power on.
const DevSegment = "127.0.0.0/8"

// startAgent switches terminal t on: it boots from the network (the in-memory OS's agent) and,
// with nothing to do, runs the installed OS's agent service, until ctx ends, the service
// powers the terminal off, or StopAgent is called. With Options.StartTerminal, that hook runs
// the terminal instead.
func (e *Env) startAgent(ctx context.Context, t Terminal) {
	u, _ := url.Parse(e.Regions[t.Region].Endpoint())
	ctx, cancel := context.WithCancel(ctx)
	e.agentMu.Lock()
	e.agentCtl[t.MAC] = cancel
	e.agentGen[t.MAC]++
	gen := e.agentGen[t.MAC]
	e.agentMu.Unlock()
	off := func() {
		e.agentMu.Lock()
		if e.agentGen[t.MAC] == gen {
			delete(e.agentCtl, t.MAC) // off: a magic packet wakes it
		}
		e.agentMu.Unlock()
		cancel()
	}
	if start := e.opts.StartTerminal; start != nil {
		e.agents.Add(1)
		go func() {
			defer e.agents.Done()
			if err := start(ctx, t); err != nil && ctx.Err() == nil {
				e.log.Error("terminal stopped", "terminal", t.Name, "err", err)
			}
			off()
		}()
		return
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	log := e.log.With("terminal", t.Name)
	a := &agent.Agent{Region: u, MAC: t.MAC, Key: t.key, Disk: t.Disk, CentralKey: e.CentralKey, HTTP: hc, Log: log,
		Installed: func(ctx context.Context) (bool, error) {
			p := &simPower{}
			s := &agent.Service{Region: u, MAC: t.MAC, Key: t.key, Disk: t.Disk, Power: p, HTTP: hc, Log: log.With("os", "installed")}
			err := s.Run(ctx)
			return p.off, err
		}}
	if e.opts.NetBoot {
		a.NetBoot = e.netBoot(t, hc)
	}
	e.agents.Add(1)
	go func() {
		defer e.agents.Done()
		if err := a.Run(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("agent stopped", "terminal", t.Name, "err", err)
		}
		off()
	}()
}

// simPower is a simulated terminal's power switch: the service returns after using it, and
// off says whether the terminal then stays off.
type simPower struct{ off bool }

// simReboot is how long a simulated terminal takes to come back from a reboot. A classroom PC
// takes tens of seconds; one that came back at once would ask for its task before the deploy
// has set up its classmates' tasks, and write alone rather than in their swarm
// (agentapi.swarmFor counts the open writes when a terminal asks).
const simReboot = 2 * time.Second

func (p *simPower) Poweroff(context.Context) error   { p.off = true; return nil }
func (p *simPower) Reboot(ctx context.Context) error { return ctxtime.Sleep(ctx, simReboot) }

// listenMagic opens region id's wake port, a loopback UDP port: a magic packet for one of the
// region's terminals that is off (not unplugged with StopAgent) switches it on. It returns the
// Waker the region sends its Wake-on-LAN with.
func (e *Env) listenMagic(id string) (*bootsvc.Waker, error) {
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(e.opts.Host, "0"))
	if err != nil {
		return nil, fmt.Errorf("region %s: wake port: %w", id, err)
	}
	target, err := netip.ParseAddrPort(pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, err
	}
	e.agents.Add(1)
	go func() {
		defer e.agents.Done()
		if err := bootsvc.ServeMagic(e.agentsCtx, pc, func(mac string) { e.wake(id, mac) }); err != nil {
			e.log.Error("wake port stopped", "region", id, "err", err)
		}
	}()
	return &bootsvc.Waker{Target: target}, nil
}

// WakeTarget is where region id's simulated terminals hear magic packets (a loopback UDP port
// in tms dev), for a test that relays another server's Wake-on-LAN to them.
func (e *Env) WakeTarget(id string) netip.AddrPort { return e.wakeTargets[id] }

// wake switches on region id's terminal mac if it is off.
func (e *Env) wake(id, mac string) {
	e.agentMu.Lock()
	var found *Terminal
	for i := range e.Terminals {
		if e.Terminals[i].Region == id && e.Terminals[i].MAC == mac {
			found = &e.Terminals[i]
		}
	}
	_, on := e.agentCtl[mac]
	skip := found == nil || on || e.unplugged[mac] || e.agentsCtx.Err() != nil
	var t Terminal
	if found != nil {
		t = *found
	}
	e.agentMu.Unlock()
	if !skip {
		e.log.Info("woken by a magic packet", "terminal", t.Name)
		e.startAgent(e.agentsCtx, t)
	}
}

// On reports whether a simulated terminal is on (its agent or agent service runs).
func (e *Env) On(name string) bool {
	t, ok := e.Terminal(name)
	if !ok {
		return false
	}
	e.agentMu.Lock()
	defer e.agentMu.Unlock()
	_, on := e.agentCtl[t.MAC]
	return on
}

// Terminal returns the simulated terminal called name.
func (e *Env) Terminal(name string) (Terminal, bool) {
	for _, t := range e.Terminals {
		if t.Name == name {
			return t, true
		}
	}
	return Terminal{}, false
}

// StopAgent stops a simulated terminal's agent at once, as if the terminal lost power and was
// unplugged: magic packets do not wake it until StartAgent.
func (e *Env) StopAgent(name string) {
	t, ok := e.Terminal(name)
	if !ok {
		return
	}
	e.agentMu.Lock()
	cancel := e.agentCtl[t.MAC]
	delete(e.agentCtl, t.MAC)
	e.unplugged[t.MAC] = true
	e.agentMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// StartAgent starts a stopped simulated terminal's agent again.
func (e *Env) StartAgent(name string) {
	if t, ok := e.Terminal(name); ok {
		e.StopAgent(name)
		e.agentMu.Lock()
		delete(e.unplugged, t.MAC)
		e.agentMu.Unlock()
		e.startAgent(e.agentsCtx, t)
	}
}

// Wait returns when ctx ends or a server fails.
func (e *Env) Wait(ctx context.Context) error {
	errc := make(chan error, len(e.Regions))
	for _, r := range e.Regions {
		go func() { errc <- r.Wait(ctx) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// Stop stops everything: agents, regions, central, the client and the Temporal server.
func (e *Env) Stop() {
	if e.cancelAgents != nil {
		e.cancelAgents()
		e.agents.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range e.RegionIDs {
		e.Regions[id].Stop(ctx)
	}
	if e.stopUI != nil {
		e.stopUI()
	}
	if e.Central != nil {
		e.Central.Stop()
	}
	for _, c := range e.regionClient {
		c.Close()
	}
	e.closeLookup()
	if e.Client != nil {
		e.Client.Close()
	}
	if e.Temporal != nil {
		e.Temporal.Stop()
	}
}

// RestartCentral stops central's server (its worker, HTTP service and catalog) and starts it
// again on the same data, as an admin restarting tms central does; Temporal and the regions
// keep running, so central's workflows go on where they were.
func (e *Env) RestartCentral(ctx context.Context) error {
	e.Central.Stop()
	c, err := server.StartCentral(ctx, e.centralOpts)
	if err != nil {
		return err
	}
	e.Central = c
	return nil
}

// RegionStore returns a region's image store.
func (e *Env) RegionStore(id string) *store.Store { return e.Regions[id].Store }

// newTemporalLogger routes the Temporal SDK's log to log, at warnings and above: its routine
// messages (workers starting and stopping) are noise next to tms's own.
func newTemporalLogger(log *slog.Logger) tlog.Logger {
	return tlog.NewStructuredLogger(slog.New(&minLevel{h: log.Handler(), min: slog.LevelWarn}))
}

type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m *minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m *minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m *minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return &minLevel{h: m.h.WithAttrs(a), min: m.min}
}
func (m *minLevel) WithGroup(g string) slog.Handler {
	return &minLevel{h: m.h.WithGroup(g), min: m.min}
}
