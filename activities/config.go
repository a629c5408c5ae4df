package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tms/settings"
	"tms/state"
	"tms/store"
)

// Run-time settings: central pushes a value (workflows.ConfigureRegion), the region validates,
// stores and applies it (ApplySetting), and central records what the region applied
// (RecordRegionSetting) so that it can show it while the region is offline.

// LiveSettings is the region's holder of its effective run-time settings (*settings.Live).
type LiveSettings interface {
	Set(key, value string, src settings.Source) (settings.Effective, error)
	All() []settings.Effective
	WakeTimeout() time.Duration
}

var _ LiveSettings = (*settings.Live)(nil)

// ApplySettingInput is a setting central pushes to a region.
type ApplySettingInput struct {
	Key   string
	Value string
	By    string // who pushed it; empty if unknown
	Task  string // the ConfigureRegion workflow's id
}

// ApplySettingResult is the setting as the region now runs with it.
type ApplySettingResult struct {
	Key      string
	Value    string // the effective value, in its canonical form
	Previous string // the effective value before
	At       time.Time
}

// ApplySetting validates a pushed setting, stores it in the region's database (so a restart
// keeps it) and makes it the effective value at once. A value that does not validate is
// ErrBadInput and changes nothing; the same push applied twice (a retry) is harmless.
func (r *Region) ApplySetting(ctx context.Context, in ApplySettingInput) (ApplySettingResult, error) {
	canon, err := settings.Check(in.Key, in.Value)
	if err != nil {
		return ApplySettingResult{}, ErrBadInput.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
	}
	if r.Settings == nil {
		return ApplySettingResult{}, ErrBadInput.New("region "+r.ID+" runs without run-time settings (an older tms?)", nil)
	}
	var prev string
	for _, e := range r.Settings.All() {
		if e.Key == in.Key {
			prev = e.Value
		}
	}
	at := r.now().UTC()
	if err := r.Inventory.SetSetting(ctx, state.Setting{Key: in.Key, Value: canon, SetAt: at, SetBy: in.By, Task: in.Task}); err != nil {
		return ApplySettingResult{}, fmt.Errorf("region %s: storing %s: %w", r.ID, in.Key, err)
	}
	eff, err := r.Settings.Set(in.Key, canon, settings.Source{Kind: settings.SourcePushed, By: in.By, At: at, Task: in.Task})
	if err != nil {
		return ApplySettingResult{}, ErrBadInput.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
	}
	return ApplySettingResult{Key: in.Key, Value: eff.Value, Previous: prev, At: at}, nil
}

// SettingInfo is a run-time setting as `tms region config show` prints it.
type SettingInfo struct {
	Key    string
	Value  string
	Source string // settings.SourceDefault, SourceConfig or SourcePushed
	By     string `json:",omitempty"`
	At     time.Time
	Task   string `json:",omitempty"`
	Base   string // the configuration file's value, or the default
}

// settingsInfo lists the region's effective settings (the admin op OpSettings).
func (r *Region) settingsInfo() ([]SettingInfo, error) {
	if r.Settings == nil {
		return nil, ErrBadInput.New("region "+r.ID+" runs without run-time settings (an older tms?)", nil)
	}
	var out []SettingInfo
	for _, e := range r.Settings.All() {
		out = append(out, SettingInfo{Key: e.Key, Value: e.Value, Source: e.Source.Kind, By: e.Source.By, At: e.Source.At,
			Task: e.Source.Task, Base: e.Base})
	}
	return out, nil
}

// RegionSettingsStore is where central keeps the settings each region applied
// (state.Catalog through StateCatalog).
type RegionSettingsStore interface {
	SetRegionSetting(ctx context.Context, region string, s state.Setting, zone bool) error
	RegionSettings(ctx context.Context, region string) ([]state.Setting, error)
}

var _ RegionSettingsStore = StateCatalog{}

func (s StateCatalog) SetRegionSetting(ctx context.Context, region string, st state.Setting, zone bool) error {
	return s.C.SetRegionSetting(ctx, region, st, zone)
}

func (s StateCatalog) RegionSettings(ctx context.Context, region string) ([]state.Setting, error) {
	return s.C.RegionSettings(ctx, region)
}

// settingsStore is c.Settings, or the catalog if it keeps settings too.
func (c *Central) settingsStore() (RegionSettingsStore, error) {
	if c.Settings != nil {
		return c.Settings, nil
	}
	if s, ok := c.Catalog.(RegionSettingsStore); ok {
		return s, nil
	}
	return nil, errors.New("central's catalog keeps no region settings")
}

// RecordSettingInput is a setting a region applied.
type RecordSettingInput struct {
	Region string
	Key    string
	Value  string
	By     string
	Task   string
	At     time.Time
}

// RecordRegionSetting records in central's catalog the value a region applied; a time zone
// also becomes the region's zone there, which schedules and --at use.
func (c *Central) RecordRegionSetting(ctx context.Context, in RecordSettingInput) error {
	canon, err := settings.Check(in.Key, in.Value)
	if err != nil {
		return ErrBadInput.New(fmt.Sprintf("region %s: %v", in.Region, err), err)
	}
	st, err := c.settingsStore()
	if err != nil {
		return err
	}
	err = st.SetRegionSetting(ctx, in.Region, state.Setting{Key: in.Key, Value: canon, SetAt: in.At, SetBy: in.By, Task: in.Task},
		in.Key == settings.KeyTimezone)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknownRegion.New(fmt.Sprintf("central has no region %s", in.Region), err)
	}
	return err
}

// RegionSettingsInput names a region.
type RegionSettingsInput struct{ Region string }

// RegionSettingsResult lists the settings a region last applied, as central recorded them.
type RegionSettingsResult struct{ Settings []SettingInfo }

// RegionSettings lists what central recorded of region's pushed settings.
func (c *Central) RegionSettings(ctx context.Context, in RegionSettingsInput) (RegionSettingsResult, error) {
	if err := state.ValidateRegionID(in.Region); err != nil {
		return RegionSettingsResult{}, ErrBadRegion.New(err.Error(), err)
	}
	st, err := c.settingsStore()
	if err != nil {
		return RegionSettingsResult{}, err
	}
	ss, err := st.RegionSettings(ctx, in.Region)
	if err != nil {
		return RegionSettingsResult{}, err
	}
	var res RegionSettingsResult
	for _, s := range ss {
		res.Settings = append(res.Settings, SettingInfo{Key: s.Key, Value: s.Value, Source: settings.SourcePushed, By: s.SetBy, At: s.SetAt, Task: s.Task})
	}
	return res, nil
}

// wakeTimeout is how long a power-on waits for a woken terminal: the live setting, else
// WakeTimeout.
func (r *Region) wakeTimeout() time.Duration {
	if r.Settings != nil {
		return r.Settings.WakeTimeout()
	}
	return r.WakeTimeout
}
