package devenv_test

import (
	"context"
	"path/filepath"
	"testing"

	"tms/devenv"
	"tms/devtemporal"
	"tms/internal/pgtest"
	"tms/workflows"
)

// TestOlderNamespaceGetsNewSearchAttributes starts tms dev with the authorizer on a data
// directory whose namespace an older tms made, without the newest search attribute: central's
// worker may not add it, tms dev does as an admin, and tasks can record who started them.
func TestOlderNamespaceGetsNewSearchAttributes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the embedded Temporal server twice")
	}
	dir := t.TempDir()
	attrs := workflows.SearchAttributes()
	old, err := devtemporal.Start(devtemporal.Options{DataDir: filepath.Join(dir, "temporal"), SearchAttributes: attrs[:len(attrs)-1]})
	if err != nil {
		t.Fatal(err)
	}
	old.Stop()
	env, err := devenv.Start(context.Background(), devenv.Options{DataDir: dir, TemporalPort: -1, UIPort: -1, CentralPort: -1,
		RegionPortBase: -1, Regions: []string{"region-a"}, Terminals: -1, Auth: true, Database: pgtest.StateFunc(t)})
	if err != nil {
		t.Fatalf("tms dev on an older namespace: %v", err)
	}
	env.Stop()
}
