package workers_test

import (
	"os"
	"testing"

	"tms/internal/pgtest"
)

// TestMain stops the PostgreSQL the tests may have started (TMS_TEST_DATABASE=postgres).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}
