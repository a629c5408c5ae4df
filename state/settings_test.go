package state

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tms/store"
)

func TestInventorySettingsSurviveReopen(t *testing.T) {
	forEachBackend(t, testInventorySettingsSurviveReopen)
}

func testInventorySettingsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := testDB(t, "region.db")
	inv, err := OpenInventory(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	for _, s := range []Setting{
		{Key: "timezone", Value: "Europe/Berlin", SetAt: at, SetBy: "ana", Task: "config/lab/timezone/1"},
		{Key: "boot.wake_timeout", Value: "1m0s", SetAt: at, Task: "t1"},
		{Key: "boot.wake_timeout", Value: "2m0s", SetAt: at.Add(time.Minute), SetBy: "bo", Task: "t2"}, // replaces
	} {
		if err := inv.SetSetting(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	inv.Close()
	if inv, err = OpenInventory(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	got, err := inv.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "boot.wake_timeout" || got[0].Value != "2m0s" || got[0].SetBy != "bo" || got[0].Task != "t2" ||
		!got[0].SetAt.Equal(at.Add(time.Minute)) || got[1].Value != "Europe/Berlin" {
		t.Fatalf("settings after reopening: %+v", got)
	}
}

func TestSettingBounds(t *testing.T) { forEachBackend(t, testSettingBounds) }

func testSettingBounds(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	at := time.Now()
	for _, tc := range []struct {
		name string
		s    Setting
	}{
		{"empty key", Setting{Value: "1", SetAt: at}},
		{"key too long", Setting{Key: strings.Repeat("k", 65), Value: "1", SetAt: at}},
		{"value too long", Setting{Key: "timezone", Value: strings.Repeat("v", 129), SetAt: at}},
		{"who too long", Setting{Key: "timezone", Value: "UTC", SetBy: strings.Repeat("u", 257), SetAt: at}},
		{"no time", Setting{Key: "timezone", Value: "UTC"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := inv.SetSetting(ctx, tc.s); err == nil {
				t.Fatal("stored")
			}
		})
	}
	if got, err := inv.Settings(ctx); err != nil || len(got) != 0 {
		t.Fatalf("refused settings were stored: %v, %v", got, err)
	}
}

func TestRegionSettings(t *testing.T) { forEachBackend(t, testRegionSettings) }

func testRegionSettings(t *testing.T) {
	ctx := context.Background()
	c, _ := openCat(t)
	at := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	if err := c.SetRegionSetting(ctx, "lab-1", Setting{Key: "timezone", Value: "UTC", SetAt: at}, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a setting of a region central does not know: %v; want not found", err)
	}
	if err := c.UpsertRegion(ctx, Region{ID: "lab-1", Timezone: "UTC"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegionSetting(ctx, "lab-1", Setting{Key: "timezone", Value: "Asia/Tokyo", SetAt: at, SetBy: "ana", Task: "t"}, true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegionSetting(ctx, "lab-1", Setting{Key: "store_high_water", Value: "0.8", SetAt: at}, false); err != nil {
		t.Fatal(err)
	}
	r, err := c.GetRegion(ctx, "lab-1")
	if err != nil || r.Timezone != "Asia/Tokyo" {
		t.Fatalf("region's zone after a pushed time zone: %q, %v", r.Timezone, err)
	}
	// A zone that is not one changes neither table.
	if err := c.SetRegionSetting(ctx, "lab-1", Setting{Key: "timezone", Value: "Mars/Base", SetAt: at}, true); err == nil {
		t.Fatal("a bad zone was recorded")
	}
	got, err := c.RegionSettings(ctx, "lab-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Key != "timezone" || got[1].Value != "Asia/Tokyo" || got[1].SetBy != "ana" || got[0].Value != "0.8" {
		t.Fatalf("region settings: %+v", got)
	}
}
