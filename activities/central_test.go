package activities_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/state"
)

func TestRegisterRegionKeepsItsTimeZone(t *testing.T) {
	ctx := context.Background()
	cat, err := state.OpenCatalog(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "central.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	c := &activities.Central{Catalog: activities.StateCatalog{C: cat}}
	if err := c.RegisterRegion(ctx, activities.RegionInfo{ID: "room3", Timezone: "Europe/Vienna"}); err != nil {
		t.Fatal(err)
	}
	res, err := c.ListRegions(ctx)
	if err != nil || len(res.Regions) != 1 || res.Regions[0].Timezone != "Europe/Vienna" {
		t.Fatalf("ListRegions = %+v, %v", res, err)
	}
	for _, bad := range []string{"Europe/Atlantis", "Local", "../../etc/passwd"} {
		err := c.RegisterRegion(ctx, activities.RegionInfo{ID: "room4", Timezone: bad})
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) || !ae.NonRetryable() || !strings.Contains(ae.Message(), "is not an IANA zone name") {
			t.Errorf("RegisterRegion with time zone %q: %v", bad, err)
		}
	}
}
