package cli

import (
	"context"
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"tms/activities"
	"tms/devtemporal"
	"tms/internal/pgtest"
	"tms/state"
)

// Pieces the real-server tests of the commands start from.

// testTemporal starts an embedded Temporal server and a client of it; both end with the test.
func testTemporal(t *testing.T) (*devtemporal.Server, client.Client) {
	t.Helper()
	srv, err := devtemporal.Start(devtemporal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c, err := client.Dial(client.Options{HostPort: srv.Address()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return srv, c
}

// testState opens central's catalog, knowing regions, and one region's inventory, in the
// test's directory; both are closed with the test.
func testState(t *testing.T, regions ...activities.RegionInfo) (activities.StateCatalog, *state.Inventory) {
	t.Helper()
	ctx := context.Background()
	cat, err := state.OpenCatalog(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "central.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "region.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	sc := activities.StateCatalog{C: cat}
	for _, r := range regions {
		if err := sc.UpsertRegion(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	return sc, inv
}

// startWorkers starts workers; they stop with the test.
func startWorkers(t *testing.T, ws ...worker.Worker) {
	t.Helper()
	for _, w := range ws {
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
	}
}

// runnerAt is a runner whose commands talk to the Temporal frontend at addr.
func runnerAt(addr string) tmsRun {
	run := newRunner(nil)
	return func(args ...string) (int, string, string) {
		return run(append([]string{"--temporal", addr}, args...)...)
	}
}
