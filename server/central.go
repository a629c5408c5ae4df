package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"tms/activities"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/workers"
)

// CentralOptions configure central's server.
type CentralOptions struct {
	DataDir string // holds catalog.db
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
}

// Central is a running central server.
type Central struct {
	Catalog *state.Catalog
	Relay   *store.Store

	worker worker.Worker
}

// StartCentral opens the catalog and starts central's worker.
func StartCentral(ctx context.Context, o CentralOptions) (_ *Central, err error) {
	if o.Client == nil || o.Key == nil {
		return nil, errors.New("central needs a Temporal client and its signing key")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	if err := EnsureSearchAttributes(ctx, o.Client, o.Namespace); err != nil {
		return nil, err
	}
	c := &Central{Relay: o.Relay}
	if c.Catalog, err = state.OpenCatalog(ctx, filepath.Join(o.DataDir, "catalog.db")); err != nil {
		return nil, err
	}
	c.worker = workers.NewCentral(o.Client, &activities.Central{Catalog: activities.StateCatalog{C: c.Catalog}, Key: o.Key})
	if err := c.worker.Start(); err != nil {
		c.Catalog.Close()
		return nil, fmt.Errorf("central worker: %w", err)
	}
	if o.Log != nil {
		o.Log.Info("central server started", "catalog", filepath.Join(o.DataDir, "catalog.db"), "key", o.Key.Public().ID())
	}
	return c, nil
}

// Stop stops the worker and closes the catalog.
func (c *Central) Stop() {
	if c.worker != nil {
		c.worker.Stop()
		c.worker = nil
	}
	c.Catalog.Close()
}
