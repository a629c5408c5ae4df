// Package siblingtest runs a region of several servers in one process for tests: every server
// a real server.Region with its own data directory and store, all of them the same region id
// on one inventory database, each knowing the others as its siblings (healthy ones only: a
// server the test killed drops out of the lists); and simulated terminals whose real agents
// boot from one of the servers when the region wakes them.
//
//	ts := &siblingtest.Terminals{CentralKey: pub}
//	reg := siblingtest.Start(t, ctx, siblingtest.Options{Region: "lab", Servers: 2, Client: c, CentralKey: pub, Waker: ts})
//	ts.Home = reg.Servers[0].Endpoint()
//	reg.Kill(0) // as a crash would
package siblingtest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tms/activities"
	"tms/agent"
	"tms/internal/pgtest"
	"tms/server"
	"tms/sibling"
	"tms/signing"
	"tms/state"
)

// Options describe the region.
type Options struct {
	Region     string
	Servers    int // default 2
	Client     client.Client
	CentralKey signing.PublicKey
	Log        *slog.Logger
	// Wrap, if set, wraps server i's HTTP handler (to watch or break it).
	Wrap func(i int, h http.Handler) http.Handler
	// Waker wakes the region's terminals (Terminals, for simulated ones).
	Waker activities.Waker
	// Unicast turns the swarm off.
	Unicast bool
}

// Region is a running region of several servers.
type Region struct {
	ID      string
	Servers []*server.Region
	// DB is the inventory database the servers share: a SQLite file, or PostgreSQL with
	// TMS_TEST_DATABASE=postgres.
	DB string

	mu   sync.Mutex
	dead []bool
}

// Start starts the region's servers one after the other and stops them when the test ends.
func Start(t testing.TB, ctx context.Context, o Options) *Region {
	t.Helper()
	n := o.Servers
	if n <= 0 {
		n = 2
	}
	// One SQLite file the servers share, or a fresh PostgreSQL database with
	// TMS_TEST_DATABASE=postgres (package pgtest).
	db := pgtest.StateFor(t)
	if db == "" {
		db = filepath.Join(t.TempDir(), "inventory.db")
	}
	r := &Region{ID: o.Region, DB: db, dead: make([]bool, n)}
	for i := range n {
		opts := server.RegionOptions{ID: o.Region, DataDir: t.TempDir(), Database: r.DB, Client: o.Client, CentralKey: o.CentralKey,
			Log: o.Log, Waker: o.Waker, Unicast: o.Unicast, ServerID: fmt.Sprintf("%s-%d", o.Region, i), Siblings: r.Siblings(i)}
		if o.Log != nil {
			opts.Log = o.Log.With("server", i)
		}
		if o.Wrap != nil {
			opts.Wrap = func(h http.Handler) http.Handler { return o.Wrap(i, h) }
		}
		s, err := server.StartRegion(ctx, opts)
		if err != nil {
			t.Fatalf("server %d of region %s: %v", i, o.Region, err)
		}
		r.mu.Lock()
		r.Servers = append(r.Servers, s)
		r.mu.Unlock()
		t.Cleanup(func() {
			if !r.Dead(i) {
				s.Stop(context.Background())
			}
		})
	}
	return r
}

// Siblings is server i's list of its live siblings, in the order of the servers.
func (r *Region) Siblings(i int) sibling.Siblings {
	return func(context.Context) ([]sibling.Sibling, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []sibling.Sibling
		for j, s := range r.Servers {
			if j != i && !r.dead[j] {
				out = append(out, sibling.Sibling{ID: fmt.Sprintf("%s-%d", r.ID, j), Endpoint: s.Endpoint()})
			}
		}
		return out, nil
	}
}

// Kill stops server i as a crash would (server.Region.Kill); its siblings stop naming it.
func (r *Region) Kill(i int) {
	r.mu.Lock()
	if r.dead[i] {
		r.mu.Unlock()
		return
	}
	r.dead[i] = true
	s := r.Servers[i]
	r.mu.Unlock()
	s.Kill()
}

// Dead reports whether server i was killed.
func (r *Region) Dead(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead[i]
}

// Inventory is the shared inventory as a live server holds it.
func (r *Region) Inventory() *state.Inventory {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.Servers {
		if !r.dead[i] {
			return s.Inventory
		}
	}
	return nil
}

// Terminal is a simulated terminal: its disk is a file.
type Terminal struct {
	MAC, Name, Disk string
	Key             []byte // its agent key (Inventory.IssueAgentKey)
}

// Terminals are simulated terminals that are off until the region wakes them (Wake, the
// region's Waker): each then runs its real agent once (agent.Agent.Once: a boot, its task if
// it has one), booting from Home, and is off again.
type Terminals struct {
	// Home is the endpoint of the server the terminals boot from (set it once the servers
	// run).
	Home       string
	CentralKey signing.PublicKey
	// FailoverAfter and ProgressEvery tune the agents (agent.Agent); zero: their defaults.
	FailoverAfter time.Duration
	ProgressEvery time.Duration
	Log           *slog.Logger

	mu      sync.Mutex
	list    map[string]Terminal // by MAC
	running map[string]bool
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

var _ activities.Waker = (*Terminals)(nil)

// Add adds a terminal.
func (ts *Terminals) Add(t Terminal) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.list == nil {
		ts.list, ts.running = map[string]Terminal{}, map[string]bool{}
		ts.ctx, ts.cancel = context.WithCancel(context.Background())
	}
	ts.list[t.MAC] = t
}

// Wake switches terminal mac on, unless it is on.
func (ts *Terminals) Wake(_ context.Context, mac string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.list[mac]
	if !ok || ts.ctx == nil {
		return fmt.Errorf("no simulated terminal %s", mac)
	}
	if ts.running[mac] || ts.ctx.Err() != nil {
		return nil
	}
	u, err := url.Parse(ts.Home)
	if err != nil {
		return err
	}
	log := ts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &agent.Agent{Region: u, MAC: t.MAC, Key: t.Key, Disk: t.Disk, CentralKey: ts.CentralKey, Once: true,
		HTTP: &http.Client{Timeout: 2 * time.Minute}, FailoverAfter: ts.FailoverAfter, ProgressEvery: ts.ProgressEvery,
		Log: log.With("terminal", t.Name)}
	ts.running[mac] = true
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		if err := a.Run(ts.ctx); err != nil && ts.ctx.Err() == nil {
			log.Warn("agent stopped", "terminal", t.Name, "err", err)
		}
		ts.mu.Lock()
		ts.running[mac] = false
		ts.mu.Unlock()
	}()
	return nil
}

// Stop switches every terminal off and waits for their agents.
func (ts *Terminals) Stop() {
	ts.mu.Lock()
	if ts.cancel != nil {
		ts.cancel()
	}
	ts.mu.Unlock()
	ts.wg.Wait()
}
