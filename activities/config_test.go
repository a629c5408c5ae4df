package activities_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/settings"
	"tms/state"
)

func TestApplySettingStoresAndAppliesOrRefuses(t *testing.T) {
	ctx := context.Background()
	r, inv := labRegion(t)
	live := settings.NewLive(settings.Defaults(), settings.Defaults())
	r.Settings = live

	res, err := r.ApplySetting(ctx, activities.ApplySettingInput{Key: settings.KeyWakeTimeout, Value: "300s", By: "ana", Task: "config/region-a/boot.wake_timeout/1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Value != "5m0s" || res.Previous != "3m0s" || res.At.IsZero() {
		t.Fatalf("result %+v", res)
	}
	if live.WakeTimeout() != 5*time.Minute {
		t.Fatalf("live wake timeout %s", live.WakeTimeout())
	}
	stored, err := inv.Settings(ctx)
	if err != nil || len(stored) != 1 || stored[0].Value != "5m0s" || stored[0].SetBy != "ana" || stored[0].Task != "config/region-a/boot.wake_timeout/1" {
		t.Fatalf("stored %+v, %v", stored, err)
	}

	for _, tc := range []struct{ name, key, value string }{
		{"out of bounds", settings.KeyWakeTimeout, "2h"},
		{"unknown key", "boot.dhcp", "full"},
		{"bad zone", settings.KeyTimezone, "Nowhere/Land"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.ApplySetting(ctx, activities.ApplySettingInput{Key: tc.key, Value: tc.value})
			if !activities.ErrBadInput.Matches(err) {
				t.Fatalf("err %v; want BadInput", err)
			}
		})
	}
	if live.WakeTimeout() != 5*time.Minute {
		t.Fatalf("a refused push changed the wake timeout to %s", live.WakeTimeout())
	}
	if stored, _ := inv.Settings(ctx); len(stored) != 1 {
		t.Fatalf("a refused push was stored: %+v", stored)
	}

	// The admin read op shows the effective values and where they come from.
	out, err := r.Admin(ctx, activities.AdminInput{Op: activities.OpSettings})
	if err != nil {
		t.Fatal(err)
	}
	var wake activities.SettingInfo
	for _, s := range out.Settings {
		if s.Key == settings.KeyWakeTimeout {
			wake = s
		}
	}
	if len(out.Settings) != len(settings.Keys()) || wake.Value != "5m0s" || wake.Source != settings.SourcePushed || wake.By != "ana" || wake.Base != "3m0s" {
		t.Fatalf("settings %+v", out.Settings)
	}
}

func TestApplySettingWithoutSettingsRefuses(t *testing.T) {
	r, _ := labRegion(t)
	if _, err := r.ApplySetting(context.Background(), activities.ApplySettingInput{Key: settings.KeyWakeTimeout, Value: "1m"}); !activities.ErrBadInput.Matches(err) {
		t.Fatalf("err %v; want BadInput", err)
	}
	if _, err := r.Admin(context.Background(), activities.AdminInput{Op: activities.OpSettings}); !activities.ErrBadInput.Matches(err) {
		t.Fatalf("err %v; want BadInput", err)
	}
}

func TestRecordRegionSetting(t *testing.T) {
	ctx := context.Background()
	cat, err := state.OpenCatalog(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "central.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	c := &activities.Central{Catalog: activities.StateCatalog{C: cat}}
	at := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	in := activities.RecordSettingInput{Region: "lab-1", Key: settings.KeyTimezone, Value: "Asia/Tokyo", By: "ana", Task: "t", At: at}
	if err := c.RecordRegionSetting(ctx, in); !activities.ErrUnknownRegion.Matches(err) {
		t.Fatalf("recording for a region central does not know: %v", err)
	}
	if err := c.RegisterRegion(ctx, activities.RegionInfo{ID: "lab-1", Timezone: "UTC"}); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordRegionSetting(ctx, in); err != nil {
		t.Fatal(err)
	}
	bad := in
	bad.Key, bad.Value = settings.KeyStoreHighWater, "2"
	if err := c.RecordRegionSetting(ctx, bad); !activities.ErrBadInput.Matches(err) {
		t.Fatalf("recording an invalid value: %v", err)
	}
	regions, err := c.ListRegions(ctx)
	if err != nil || len(regions.Regions) != 1 || regions.Regions[0].Timezone != "Asia/Tokyo" {
		t.Fatalf("regions after a pushed zone: %+v, %v", regions, err)
	}
	got, err := c.RegionSettings(ctx, activities.RegionSettingsInput{Region: "lab-1"})
	if err != nil || len(got.Settings) != 1 || got.Settings[0].Value != "Asia/Tokyo" || got.Settings[0].By != "ana" || !got.Settings[0].At.Equal(at) {
		t.Fatalf("recorded settings %+v, %v", got, err)
	}
}
