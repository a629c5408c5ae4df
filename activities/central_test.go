package activities_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/signing"
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

func TestLocateVersionListsAtMostMaxSourcesNearestFirst(t *testing.T) {
	ctx := context.Background()
	cat, err := state.OpenCatalog(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "central.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	key, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &activities.Central{Catalog: activities.StateCatalog{C: cat}, Key: key}
	version := strings.Repeat("ab", 32)
	// 30 regions hold the version: the last 3 share the target's site.
	for i := range 31 {
		id, site := fmt.Sprintf("room%02d", i), "far"
		if i >= 27 {
			site = "near"
		}
		if err := c.RegisterRegion(ctx, activities.RegionInfo{ID: id, Labels: map[string]string{"site": site}, Endpoint: "http://127.0.0.1:9/"}); err != nil {
			t.Fatal(err)
		}
		if i == 30 {
			break // room30 is the target
		}
		if _, err := c.RegisterVersion(ctx, activities.RegisterVersionInput{Info: activities.VersionInfo{Version: version, Name: "exam"}, Tag: "latest", Region: id}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.LocateVersion(ctx, activities.LocateInput{Image: "exam", Target: "room30"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sources) != activities.MaxSources {
		t.Fatalf("%d sources, want %d", len(res.Sources), activities.MaxSources)
	}
	for i, want := range []string{"room27", "room28", "room29", "room00"} {
		if res.Sources[i].Region != want {
			t.Errorf("source %d is %s, want %s (nearest first)", i, res.Sources[i].Region, want)
		}
	}
}
