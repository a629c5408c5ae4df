// Package settings is the registry of a region's run-time settings: the values central may
// change while the region runs (`tms region config set R KEY VALUE`), each with its key, its
// kind, its built-in default, a validator whose error names the key and says what is wanted,
// and the description `tms region config show` prints.
//
// The region holds its effective values in a Live holder, built from its configuration file's
// values with the overrides central pushed (kept in the region's database) applied on top; the
// parts that use a value read it from the holder each time, so a push takes effect without a
// restart:
//
//	live := settings.NewLive(fileValues, defaults)
//	live.OnChange(func(v settings.Values) { dhcp.SetUnknownLimits(v.DHCPUnknownPerMAC, v.DHCPUnknownTotal) })
//	eff, err := live.Set(settings.KeyWakeTimeout, "5m", settings.Source{Kind: settings.SourcePushed, By: "ana"})
//	timeout := live.WakeTimeout()
//
// Check is pure and deterministic (it reads nothing but its arguments and the zone database
// compiled into tms), so workflow code, the CLI and the region validate with the same function.
package settings

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // zone names are checked the same wherever tms runs
)

// The keys of the run-time settings.
const (
	// KeyTimezone is the IANA zone the region's schedules and `--at` times are written in.
	KeyTimezone = "timezone"
	// KeyWakeTimeout is how long a power-on waits for a woken terminal to be seen.
	KeyWakeTimeout = "boot.wake_timeout"
	// KeyClaimQuiet is how long a network boot into a task stands before its result is taken.
	KeyClaimQuiet = "boot.claim_quiet"
	// KeyDHCPUnknownPerMAC bounds the DHCP requests of one MAC that is not admitted (a minute).
	KeyDHCPUnknownPerMAC = "boot.dhcp_unknown_per_mac"
	// KeyDHCPUnknownTotal bounds the DHCP requests of all MACs not admitted (a second).
	KeyDHCPUnknownTotal = "boot.dhcp_unknown_total"
	// KeyStoreHighWater is the fraction of the store's capacity above which it is too full.
	KeyStoreHighWater = "store_high_water"
	// KeyStoreLowWater is the fraction of the store's capacity eviction brings it down to.
	KeyStoreLowWater = "store_low_water"
	// KeyWANRate caps the bytes a second of the region's WAN transfers (ParseRate).
	KeyWANRate = "wan_rate"
	// KeyWANRateWindows caps them differently at times of day (ParseRateWindows).
	KeyWANRateWindows = "wan_rate_windows"
)

// Bounds of the values, shared by the configuration file's validation and pushes.
const (
	MinWakeTimeout = 10 * time.Second
	MaxWakeTimeout = time.Hour
	MaxClaimQuiet  = time.Hour
	// MaxDHCPUnknownPerMAC: a PC's firmware, iPXE and OS send a few requests each at boot; two a
	// second for a minute is far more than any of them needs.
	MaxDHCPUnknownPerMAC = 120
	// MaxDHCPUnknownTotal keeps a minute's worth of unknown requests below the DHCP server's
	// table of tracked MACs (4096), so that the per-MAC limit keeps working under a flood.
	MaxDHCPUnknownTotal = 60
	MinStoreHighWater   = 0.5
	MaxStoreHighWater   = 0.99
	MinStoreLowWater    = 0.3
	MaxStoreLowWater    = 0.95

	// MaxKeyLen and MaxValueLen bound what a key or value may be before it is even parsed:
	// the CLI, the workflow and the region refuse longer ones.
	MaxKeyLen   = 64
	MaxValueLen = 128
)

// Values are a region's run-time settings. The zero Values is not valid; Defaults is.
type Values struct {
	// Timezone is an IANA zone name (never empty or "Local").
	Timezone          string
	WakeTimeout       time.Duration
	ClaimQuiet        time.Duration
	DHCPUnknownPerMAC int
	DHCPUnknownTotal  int
	StoreHighWater    float64
	// StoreLowWater is below StoreHighWater (With refuses a change that breaks this).
	StoreLowWater float64
	// WANRate caps the region's WAN transfers, in bytes a second; 0: no cap.
	WANRate int64
	// WANRateWindows are the times of day with caps of their own, in canonical form
	// (FormatRateWindows; "none": no windows). WANRateAt says which cap is in force.
	WANRateWindows string
}

// Defaults are the built-in defaults; Timezone is "UTC" here, and a region uses its server's
// local zone instead (config.LocalZone), which the caller puts in.
func Defaults() Values {
	return Values{Timezone: "UTC", WakeTimeout: 3 * time.Minute, ClaimQuiet: time.Minute,
		DHCPUnknownPerMAC: 12, DHCPUnknownTotal: 20, StoreHighWater: 0.9, StoreLowWater: 0.8,
		WANRate: 0, WANRateWindows: NoWindows}
}

// Kind is the type of a setting's value.
type Kind string

// Kinds of values.
const (
	KindZone     Kind = "zone"     // an IANA zone name, like Europe/Berlin
	KindDuration Kind = "duration" // a Go duration, like 90s or 5m
	KindInt      Kind = "int"      // a whole number
	KindFraction Kind = "fraction" // a decimal fraction, like 0.85
	KindRate     Kind = "rate"     // bytes a second, like 20MB/s or 160Mbit/s; off: no cap
	KindWindows  Kind = "windows"  // times of day with rates, like 08:00-16:00=5MB/s,16:00-08:00=50MB/s
)

// Setting is one run-time setting.
type Setting struct {
	Key  string
	Kind Kind
	// ConfigKey is the configuration file's key the region's value comes from.
	ConfigKey string
	// Bounds says which values are allowed, for people.
	Bounds string
	// Description says what the setting does, for `tms region config show`.
	Description string

	parse func(string) (any, error) // the value, or why it is not valid (without the key)
	get   func(Values) string
	put   func(*Values, any)
}

// registry lists the settings in the order show prints them; it never changes.
var registry = []Setting{
	{
		Key: KeyTimezone, Kind: KindZone, ConfigKey: "region.timezone", Bounds: "an IANA zone name",
		Description: "the zone the region's schedules and --at times are written in; reported to central's catalog",
		parse: func(s string) (any, error) {
			if s == "" || s == "Local" {
				return nil, fmt.Errorf("%q is not an IANA time zone name, like Europe/Berlin or America/New_York", s)
			}
			if _, err := time.LoadLocation(s); err != nil {
				return nil, fmt.Errorf("%q is not an IANA time zone name, like Europe/Berlin or America/New_York", s)
			}
			return s, nil
		},
		get: func(v Values) string { return v.Timezone },
		put: func(v *Values, x any) { v.Timezone = x.(string) },
	},
	{
		Key: KeyWakeTimeout, Kind: KindDuration, ConfigKey: "region.boot.wake_timeout", Bounds: "10s to 1h",
		Description: "how long a power-on waits for a terminal sent Wake-on-LAN to be seen before it says the terminal did not answer",
		parse:       durationIn(MinWakeTimeout, MaxWakeTimeout),
		get:         func(v Values) string { return v.WakeTimeout.String() },
		put:         func(v *Values, x any) { v.WakeTimeout = x.(time.Duration) },
	},
	{
		Key: KeyClaimQuiet, Kind: KindDuration, ConfigKey: "region.boot.claim_quiet", Bounds: "0s to 1h",
		Description: "how long a terminal's network boot into a task must stand unchallenged before the region takes the task's result",
		parse:       durationIn(0, MaxClaimQuiet),
		get:         func(v Values) string { return v.ClaimQuiet.String() },
		put:         func(v *Values, x any) { v.ClaimQuiet = x.(time.Duration) },
	},
	{
		Key: KeyDHCPUnknownPerMAC, Kind: KindInt, ConfigKey: "region.boot.dhcp_unknown_per_mac", Bounds: "1 to 120 (a minute)",
		Description: "DHCP requests a minute one MAC that is not admitted may send; more get no answer",
		parse:       intIn(1, MaxDHCPUnknownPerMAC, "requests a minute"),
		get:         func(v Values) string { return strconv.Itoa(v.DHCPUnknownPerMAC) },
		put:         func(v *Values, x any) { v.DHCPUnknownPerMAC = x.(int) },
	},
	{
		Key: KeyDHCPUnknownTotal, Kind: KindInt, ConfigKey: "region.boot.dhcp_unknown_total", Bounds: "1 to 60 (a second)",
		Description: "DHCP requests a second all MACs that are not admitted may send together; more get no answer",
		parse:       intIn(1, MaxDHCPUnknownTotal, "requests a second"),
		get:         func(v Values) string { return strconv.Itoa(v.DHCPUnknownTotal) },
		put:         func(v *Values, x any) { v.DHCPUnknownTotal = x.(int) },
	},
	{
		Key: KeyStoreHighWater, Kind: KindFraction, ConfigKey: "region.store_high_water", Bounds: "0.5 to 0.99",
		Description: "the fraction of the store's capacity above which the store counts as too full",
		parse: func(s string) (any, error) {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(f) || f < MinStoreHighWater || f > MaxStoreHighWater {
				return nil, fmt.Errorf("%q is not a fraction between 0.5 and 0.99, like 0.9", s)
			}
			return f, nil
		},
		get: func(v Values) string { return strconv.FormatFloat(v.StoreHighWater, 'f', -1, 64) },
		put: func(v *Values, x any) { v.StoreHighWater = x.(float64) },
	},
	{
		Key: KeyStoreLowWater, Kind: KindFraction, ConfigKey: "region.store_low_water", Bounds: "0.3 to 0.95, below store_high_water",
		Description: "the fraction of the store's capacity that eviction brings a store above its high-water mark down to, removing the oldest stored images nothing holds",
		parse: func(s string) (any, error) {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(f) || f < MinStoreLowWater || f > MaxStoreLowWater {
				return nil, fmt.Errorf("%q is not a fraction between 0.3 and 0.95, like 0.8", s)
			}
			return f, nil
		},
		get: func(v Values) string { return strconv.FormatFloat(v.StoreLowWater, 'f', -1, 64) },
		put: func(v *Values, x any) { v.StoreLowWater = x.(float64) },
	},
	{
		Key: KeyWANRate, Kind: KindRate, ConfigKey: "region.wan_rate", Bounds: "off, or 10kB/s to 100Gbit/s",
		Description: "caps the bytes a second of all the region's WAN transfers together, both ways (peer pulls, what its data endpoint serves to other regions, relay uploads and downloads); off: no cap",
		parse:       func(s string) (any, error) { return ParseRate(s) },
		get:         func(v Values) string { return FormatRate(v.WANRate) },
		put:         func(v *Values, x any) { v.WANRate = x.(int64) },
	},
	{
		Key: KeyWANRateWindows, Kind: KindWindows, ConfigKey: "region.wan_rate_windows",
		Bounds:      fmt.Sprintf("none, or up to %d HH:MM-HH:MM=RATE, comma-separated, not overlapping", MaxRateWindows),
		Description: "times of day, in the region's zone, with WAN caps of their own that replace wan_rate while they last, like 08:00-16:00=5MB/s,16:00-08:00=50MB/s; none: wan_rate all day",
		parse: func(s string) (any, error) {
			if s == "" {
				return nil, fmt.Errorf("empty: say none for no windows, or like 08:00-16:00=5MB/s")
			}
			ws, err := ParseRateWindows(s)
			if err != nil {
				return nil, err
			}
			return FormatRateWindows(ws), nil
		},
		get: func(v Values) string { return v.WANRateWindows },
		put: func(v *Values, x any) { v.WANRateWindows = x.(string) },
	},
}

// CheckWater checks that the low-water mark is below the high-water mark, naming the key that
// changed (either); the zero value of either is not checked (not set).
func CheckWater(high, low float64, changed string) error {
	if high == 0 || low == 0 || low < high {
		return nil
	}
	if changed == KeyStoreHighWater {
		return fmt.Errorf("%s: %s is not above %s (%s): lower %s first", KeyStoreHighWater, strconv.FormatFloat(high, 'f', -1, 64),
			KeyStoreLowWater, strconv.FormatFloat(low, 'f', -1, 64), KeyStoreLowWater)
	}
	return fmt.Errorf("%s: %s is not below %s (%s)", KeyStoreLowWater, strconv.FormatFloat(low, 'f', -1, 64),
		KeyStoreHighWater, strconv.FormatFloat(high, 'f', -1, 64))
}

func durationIn(lo, hi time.Duration) func(string) (any, error) {
	return func(s string) (any, error) {
		d, err := time.ParseDuration(s)
		if err != nil || d < lo || d > hi {
			return nil, fmt.Errorf("%q is not a duration between %s and %s, like 90s or 5m", s, short(lo), short(hi))
		}
		return d, nil
	}
}

func intIn(lo, hi int, unit string) func(string) (any, error) {
	return func(s string) (any, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not a whole number between %d and %d (%s)", s, lo, hi, unit)
		}
		return n, nil
	}
}

// short prints a duration without its zero minutes and seconds ("1h", not "1h0m0s").
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// All returns the settings in the order show prints them.
func All() []Setting { return slices.Clone(registry) }

// Keys returns the settings' keys.
func Keys() []string {
	k := make([]string, len(registry))
	for i, s := range registry {
		k[i] = s.Key
	}
	return k
}

// Lookup returns the setting of key.
func Lookup(key string) (Setting, bool) {
	for _, s := range registry {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

// Check validates value for key and returns it in its canonical form (a duration as Go prints
// it, a number without padding), which is what the region stores and shows. Its error names
// the key and says what is wanted. Check is deterministic: workflow code may call it.
func Check(key, value string) (string, error) {
	if len(key) > MaxKeyLen {
		return "", fmt.Errorf("setting key of %d bytes: at most %d", len(key), MaxKeyLen)
	}
	s, ok := Lookup(key)
	if !ok {
		return "", fmt.Errorf("%q is not a run-time setting: one of %s", key, strings.Join(Keys(), ", "))
	}
	if len(value) > MaxValueLen {
		return "", fmt.Errorf("%s: a value of %d bytes: at most %d", key, len(value), MaxValueLen)
	}
	x, err := s.parse(strings.TrimSpace(value))
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	var v Values
	s.put(&v, x)
	return s.get(v), nil
}

// Get returns key's value in v, in its canonical form ("" for an unknown key).
func (v Values) Get(key string) string {
	if s, ok := Lookup(key); ok {
		return s.get(v)
	}
	return ""
}

// With returns v with key set to value, if value is valid for key.
func (v Values) With(key, value string) (Values, error) {
	canon, err := Check(key, value)
	if err != nil {
		return v, err
	}
	s, _ := Lookup(key)
	x, _ := s.parse(canon)
	s.put(&v, x)
	if key == KeyStoreHighWater || key == KeyStoreLowWater {
		if err := CheckWater(v.StoreHighWater, v.StoreLowWater, key); err != nil {
			return v, err
		}
	}
	return v, nil
}

// ParseSize parses a size in bytes: a number with an optional unit, "2GiB", "500MB", "1.5 TiB",
// "4096"; "0" and "" are 0. Units are B, KB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB
// (powers of 1024), case-insensitive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	if len(t) > 32 {
		return 0, fmt.Errorf("%q is not a size like 2GiB or 500MB", s)
	}
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult := map[string]float64{"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}[unit]
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || math.IsNaN(f) || f < 0 || f*mult > float64(1<<62) {
		return 0, fmt.Errorf("%q is not a size like 2GiB or 500MB", s)
	}
	return int64(f * mult), nil
}
