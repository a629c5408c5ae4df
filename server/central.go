package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"tms/activities"
	"tms/config"
	"tms/metrics"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/workers"
	"tms/workflows"
)

// CentralOptions configure central's server.
type CentralOptions struct {
	DataDir string // holds catalog.db
	// Database is the catalog database: "" for DataDir/catalog.db (SQLite), a SQLite path, or
	// a postgres:// URL (central.database).
	Database string
	// DatabaseConnectTimeout bounds how long starting waits for an unreachable PostgreSQL
	// (default state.DefaultConnectTimeout).
	DatabaseConnectTimeout time.Duration
	// Relay is the storage regions relay images through when they cannot reach each other.
	Relay *store.Store
	// Key is central's signing key (signing.LoadKeyFile): it signs every version central
	// registers and every grant it mints.
	Key    *signing.PrivateKey
	Client client.Client
	// Namespace is the client's Temporal namespace (default "default"), where central
	// registers the search attributes of tasks.
	Namespace string
	Log       *slog.Logger
	// Listen is the address of central's HTTP service (central.listen: /healthz, /metrics,
	// and what Routes add); empty: none.
	Listen string
	// TLS, if set (central.tls), makes the HTTP service HTTPS.
	TLS config.ServerTLS
	// Routes add routes to central's HTTP service (see CentralMux), given the central they
	// serve (its catalog holds the users of tms login).
	Routes []func(*http.ServeMux, *Central)
	// PlannerInterval is how often the schedule planner looks at the schedules (default
	// workflows.PlannerInterval).
	PlannerInterval time.Duration
}

// Central is a running central server.
type Central struct {
	Catalog *state.Catalog
	Relay   *store.Store
	Metrics *metrics.Central

	worker worker.Worker
	http   *http.Server // nil without an HTTP service
	ln     net.Listener
	tls    bool // the HTTP service is HTTPS
	served chan error
}

// StartCentral opens the catalog and starts central's worker.
func StartCentral(ctx context.Context, o CentralOptions) (_ *Central, err error) {
	if o.Client == nil || o.Key == nil {
		return nil, errors.New("central needs a Temporal client and its signing key")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	if err := EnsureSearchAttributes(ctx, o.Client, o.Namespace); err != nil {
		return nil, err
	}
	c := &Central{Relay: o.Relay, served: make(chan error, 1)}
	if c.Catalog, err = OpenCatalog(ctx, o.DataDir, o.Database, o.DatabaseConnectTimeout, o.Log); err != nil {
		return nil, err
	}
	src := metrics.CentralSources{Tasks: temporalTasks{c: o.Client, namespace: o.Namespace}, Kinds: workflows.TaskKinds,
		Regions: c.Catalog.CountRegions, Log: o.Log}
	src.Plans = func(ctx context.Context) ([]metrics.PlanRegions, error) { return planRegions(ctx, o.Client) }
	if o.Relay != nil {
		src.Relay = func(ctx context.Context) (metrics.StoreUsage, error) {
			u, err := o.Relay.Usage(ctx)
			return metrics.StoreUsage{Used: u.Used, Capacity: u.Capacity}, err
		}
	}
	c.Metrics = metrics.NewCentral(src)
	if o.Listen != "" {
		if err := c.serveHTTP(o.Listen, o.TLS, o.Routes); err != nil {
			c.Catalog.Close()
			return nil, err
		}
	}
	c.worker = workers.NewCentral(o.Client, &activities.Central{Catalog: activities.StateCatalog{C: c.Catalog}, Key: o.Key,
		Planner: schedulePlans{c: o.Client, log: o.Log, now: time.Now}, PlannerInterval: o.PlannerInterval})
	if err := c.worker.Start(); err != nil {
		c.worker = nil
		c.Stop()
		return nil, fmt.Errorf("central worker: %w", err)
	}
	if o.Log != nil {
		o.Log.Info("central server started", "catalog", state.RedactDSN(catalogDatabase(o.DataDir, o.Database)), "key", o.Key.Public().ID(),
			"http", c.HTTPAddr())
	}
	return c, nil
}

// Stop stops the worker and the HTTP service (within 5 s) and closes the catalog.
func (c *Central) Stop() {
	if c.worker != nil {
		c.worker.Stop()
		c.worker = nil
	}
	if c.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.http.Shutdown(ctx)
		cancel()
		c.http = nil
	}
	c.Catalog.Close()
}

// planRegions counts the regions of each plan central's service workflow knows, by state.
func planRegions(ctx context.Context, c client.Client) ([]metrics.PlanRegions, error) {
	v, err := c.QueryWorkflow(ctx, workflows.CentralServiceID, "", workflows.QueryStatus)
	if err != nil {
		return nil, err
	}
	var st workflows.CentralStatus
	if err := v.Get(&st); err != nil {
		return nil, err
	}
	var out []metrics.PlanRegions
	for _, p := range st.Plans {
		n := map[string]int{}
		for _, r := range p.Regions {
			switch {
			case r.State == workflows.PlanReady:
				n["ready"]++
			case p.Late(r):
				n["not-ready"]++
			default:
				n["pending"]++
			}
		}
		for _, state := range metrics.PlanStates {
			out = append(out, metrics.PlanRegions{Plan: p.Name, State: state, Count: n[state]})
		}
	}
	return out, nil
}

// OpenCatalog opens central's catalog where tms central keeps it: database (central.database)
// if set, else catalog.db in dataDir (central.data_dir). tms central init --admin opens it too.
func OpenCatalog(ctx context.Context, dataDir, database string, connectTimeout time.Duration, log *slog.Logger) (*state.Catalog, error) {
	return state.OpenCatalog(ctx, catalogDatabase(dataDir, database), state.WithLogger(log), state.WithConnectTimeout(connectTimeout))
}

func catalogDatabase(dataDir, database string) string {
	if database == "" {
		return filepath.Join(dataDir, "catalog.db")
	}
	return database
}
