package devtemporal

import (
	"os"
	"testing"

	"tms/internal/pgtest"
)

// TestMain stops the PostgreSQL TestOnPostgres started.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}
