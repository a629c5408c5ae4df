package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"tms/activities"
	"tms/internal/atomicfile"
	"tms/state"
	"tms/store"
	"tms/transfer"
	"tms/workers"
)

// CentralOptions configure central's server.
type CentralOptions struct {
	DataDir string // holds catalog.db
	// Relay is the storage regions relay images through when they cannot reach each other.
	Relay  *store.Store
	Signer *transfer.Signer
	Client client.Client
	Log    *slog.Logger
}

// Central is a running central server.
type Central struct {
	Catalog *state.Catalog
	Relay   *store.Store

	worker worker.Worker
}

// StartCentral opens the catalog and starts central's worker.
func StartCentral(ctx context.Context, o CentralOptions) (_ *Central, err error) {
	if o.Client == nil || o.Signer == nil {
		return nil, errors.New("central needs a Temporal client and a grant signer")
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	c := &Central{Relay: o.Relay}
	if c.Catalog, err = state.OpenCatalog(ctx, filepath.Join(o.DataDir, "catalog.db")); err != nil {
		return nil, err
	}
	c.worker = workers.NewCentral(o.Client, &activities.Central{Catalog: activities.StateCatalog{C: c.Catalog}, Signer: o.Signer})
	if err := c.worker.Start(); err != nil {
		c.Catalog.Close()
		return nil, fmt.Errorf("central worker: %w", err)
	}
	if o.Log != nil {
		o.Log.Info("central server started", "catalog", filepath.Join(o.DataDir, "catalog.db"))
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

// LoadOrCreateKey reads the grant key at path, creating a random one (mode 0600) if there is
// none: what `tms dev` does; production servers are given the key central shares with regions.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, bytes.NewReader(key), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}
