package config_test

import (
	"path/filepath"
	"testing"

	"tms/config"
)

// TestExampleConfigs loads the example files of docs/deploy.md (dist/config) as the servers
// would, so that a key renamed or a value refused breaks this test, not an admin's first start.
// e2e/production runs them.
func TestExampleConfigs(t *testing.T) {
	for _, c := range []struct {
		file string
		role config.Role
	}{{"central.yaml", config.RoleCentral}, {"region.yaml", config.RoleRegion}} {
		cfg, err := config.Load(config.LoadOptions{File: filepath.Join("..", "dist", "config", c.file), Role: c.role,
			Env: func(string) (string, bool) { return "", false }})
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		switch c.role {
		case config.RoleCentral:
			if cfg.Central.Database.Value() == "" || cfg.Central.Store == "" {
				t.Errorf("central.yaml: database %q, store %q: the production shape has both", cfg.Central.Database.Value(), cfg.Central.Store)
			}
		case config.RoleRegion:
			if cfg.Region.ServerID == "" || len(cfg.Region.ServerLabels) == 0 || cfg.Region.Database.Value() == "" {
				t.Errorf("region.yaml: server id %q, labels %v, database %q: a region of several servers needs all three",
					cfg.Region.ServerID, cfg.Region.ServerLabels, cfg.Region.Database.Value())
			}
		}
	}
}
