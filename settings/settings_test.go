package settings

import (
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
		want             string // canonical value; empty: refused
		wantErr          string // part of the error
	}{
		{"zone accepted", KeyTimezone, "Europe/Berlin", "Europe/Berlin", ""},
		{"zone UTC accepted", KeyTimezone, "UTC", "UTC", ""},
		{"zone trimmed", KeyTimezone, " America/New_York ", "America/New_York", ""},
		{"zone unknown refused", KeyTimezone, "Mars/Olympus", "", "timezone: \"Mars/Olympus\" is not an IANA time zone"},
		{"zone empty refused", KeyTimezone, "", "", "timezone: \"\" is not an IANA"},
		{"zone Local refused", KeyTimezone, "Local", "", "timezone: \"Local\""},
		{"zone path refused", KeyTimezone, "../../etc/passwd", "", "timezone:"},

		{"wake timeout canonical", KeyWakeTimeout, "300s", "5m0s", ""},
		{"wake timeout lower bound", KeyWakeTimeout, "10s", "10s", ""},
		{"wake timeout upper bound", KeyWakeTimeout, "1h", "1h0m0s", ""},
		{"wake timeout below", KeyWakeTimeout, "9s", "", "boot.wake_timeout: \"9s\" is not a duration between 10s and 1h"},
		{"wake timeout above", KeyWakeTimeout, "61m", "", "boot.wake_timeout:"},
		{"wake timeout not a duration", KeyWakeTimeout, "five", "", "boot.wake_timeout:"},
		{"wake timeout without unit", KeyWakeTimeout, "300", "", "boot.wake_timeout:"},

		{"claim quiet zero", KeyClaimQuiet, "0s", "0s", ""},
		{"claim quiet upper bound", KeyClaimQuiet, "60m", "1h0m0s", ""},
		{"claim quiet negative", KeyClaimQuiet, "-1s", "", "boot.claim_quiet: \"-1s\" is not a duration between 0s and 1h"},
		{"claim quiet above", KeyClaimQuiet, "1h1s", "", "boot.claim_quiet:"},

		{"per MAC lower bound", KeyDHCPUnknownPerMAC, "1", "1", ""},
		{"per MAC upper bound", KeyDHCPUnknownPerMAC, "120", "120", ""},
		{"per MAC leading zero", KeyDHCPUnknownPerMAC, "012", "12", ""},
		{"per MAC zero", KeyDHCPUnknownPerMAC, "0", "", "boot.dhcp_unknown_per_mac: \"0\" is not a whole number between 1 and 120"},
		{"per MAC above", KeyDHCPUnknownPerMAC, "121", "", "boot.dhcp_unknown_per_mac:"},
		{"per MAC fraction", KeyDHCPUnknownPerMAC, "1.5", "", "boot.dhcp_unknown_per_mac:"},

		{"total lower bound", KeyDHCPUnknownTotal, "1", "1", ""},
		{"total upper bound", KeyDHCPUnknownTotal, "60", "60", ""},
		{"total above", KeyDHCPUnknownTotal, "61", "", "boot.dhcp_unknown_total: \"61\" is not a whole number between 1 and 60"},
		{"total negative", KeyDHCPUnknownTotal, "-3", "", "boot.dhcp_unknown_total:"},

		{"high water", KeyStoreHighWater, "0.85", "0.85", ""},
		{"high water lower bound", KeyStoreHighWater, "0.5", "0.5", ""},
		{"high water upper bound", KeyStoreHighWater, "0.99", "0.99", ""},
		{"high water canonical", KeyStoreHighWater, "0.900", "0.9", ""},
		{"high water below", KeyStoreHighWater, "0.49", "", "store_high_water: \"0.49\" is not a fraction between 0.5 and 0.99"},
		{"high water full", KeyStoreHighWater, "1", "", "store_high_water:"},
		{"high water NaN", KeyStoreHighWater, "NaN", "", "store_high_water:"},
		{"high water percent", KeyStoreHighWater, "90%", "", "store_high_water:"},

		{"low water", KeyStoreLowWater, "0.75", "0.75", ""},
		{"low water lower bound", KeyStoreLowWater, "0.3", "0.3", ""},
		{"low water upper bound", KeyStoreLowWater, "0.95", "0.95", ""},
		{"low water below", KeyStoreLowWater, "0.29", "", "store_low_water: \"0.29\" is not a fraction between 0.3 and 0.95"},
		{"low water above", KeyStoreLowWater, "0.96", "", "store_low_water:"},

		{"wan rate canonical", KeyWANRate, "80Mbit/s", "10MB/s", ""},
		{"wan rate off", KeyWANRate, "0", "off", ""},
		{"wan rate without per second", KeyWANRate, "10 MB", "", `wan_rate: rate "10 MB": no unit per second, say 10MB/s`},
		{"wan rate absurd", KeyWANRate, "1000Gbit/s", "", "wan_rate:"},
		{"wan windows canonical", KeyWANRateWindows, "16:00-08:00=400Mbit/s, 8:00-16:00=5MB/s", "08:00-16:00=5MB/s,16:00-08:00=50MB/s", ""},
		{"wan windows none", KeyWANRateWindows, "none", "none", ""},
		{"wan windows empty", KeyWANRateWindows, "", "", "wan_rate_windows: empty: say none"},
		{"wan windows overlap", KeyWANRateWindows, "08:00-16:00=5MB/s,12:00-13:00=off", "", "wan_rate_windows: rate windows 08:00-16:00=5MB/s and \"12:00-13:00=off\" overlap"},

		{"unknown key", "boot.dhcp", "full", "", "\"boot.dhcp\" is not a run-time setting: one of timezone, boot.wake_timeout"},
		{"key too long", strings.Repeat("k", MaxKeyLen+1), "1", "", "at most 64"},
		{"value too long", KeyTimezone, strings.Repeat("a", MaxValueLen+1), "", "timezone: a value of 129 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Check(tc.key, tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Check(%q, %q) = %q, %v; want an error containing %q", tc.key, tc.value, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Check(%q, %q) = %q, %v; want %q", tc.key, tc.value, got, err, tc.want)
			}
		})
	}
}

func TestDefaultsAreValidAndEverySettingRoundTrips(t *testing.T) {
	d := Defaults()
	for _, s := range All() {
		if s.Description == "" || s.ConfigKey == "" || s.Bounds == "" {
			t.Errorf("%s: missing description, config key or bounds", s.Key)
		}
		v := d.Get(s.Key)
		canon, err := Check(s.Key, v)
		if err != nil || canon != v {
			t.Errorf("%s: default %q checks as %q, %v", s.Key, v, canon, err)
		}
	}
}

func TestLiveSourcesAndSet(t *testing.T) {
	defaults := Defaults()
	base := defaults
	base.WakeTimeout = 2 * time.Minute // the configuration file's
	base.DHCPUnknownTotal = 0          // a caller's zero: the default
	l := NewLive(base, defaults)
	if got := l.Values().DHCPUnknownTotal; got != 20 {
		t.Fatalf("a zero base value became %d; want the default 20", got)
	}
	src := func(key string) string {
		e, err := l.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		return e.Source.Kind
	}
	if src(KeyWakeTimeout) != SourceConfig || src(KeyClaimQuiet) != SourceDefault || src(KeyDHCPUnknownTotal) != SourceDefault {
		t.Fatalf("sources: wake %s, quiet %s, total %s", src(KeyWakeTimeout), src(KeyClaimQuiet), src(KeyDHCPUnknownTotal))
	}

	var seen []Values
	l.OnChange(func(v Values) { seen = append(seen, v) })
	at := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	e, err := l.Set(KeyWakeTimeout, "90s", Source{Kind: SourcePushed, By: "ana", At: at, Task: "config/r/boot.wake_timeout/x"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Value != "1m30s" || e.Base != "2m0s" || e.Source.By != "ana" || !e.Source.At.Equal(at) {
		t.Fatalf("Set returned %+v", e)
	}
	if l.WakeTimeout() != 90*time.Second || len(seen) != 1 || seen[0].WakeTimeout != 90*time.Second {
		t.Fatalf("after Set: WakeTimeout %s, OnChange saw %v", l.WakeTimeout(), seen)
	}

	// A value that does not validate changes nothing and calls nobody.
	if _, err := l.Set(KeyWakeTimeout, "2h", Source{Kind: SourcePushed}); err == nil {
		t.Fatal("Set accepted 2h")
	}
	if l.WakeTimeout() != 90*time.Second || len(seen) != 1 {
		t.Fatalf("a refused Set changed the value to %s or called OnChange (%d)", l.WakeTimeout(), len(seen))
	}
	// The same value again changes nothing to call about, and keeps the new source.
	if _, err := l.Set(KeyWakeTimeout, "1m30s", Source{Kind: SourcePushed, By: "bo"}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 {
		t.Fatalf("OnChange called for an unchanged value")
	}
	if e, _ := l.Get(KeyWakeTimeout); e.Source.By != "bo" {
		t.Fatalf("source after a second push: %+v", e.Source)
	}

	for key, want := range map[string]func() bool{
		KeyTimezone:          func() bool { return l.Timezone() == "Asia/Tokyo" },
		KeyClaimQuiet:        func() bool { return l.ClaimQuiet() == 5*time.Second },
		KeyStoreHighWater:    func() bool { return l.StoreHighWater() == 0.85 },
		KeyDHCPUnknownPerMAC: func() bool { return l.Values().DHCPUnknownPerMAC == 30 },
		KeyDHCPUnknownTotal:  func() bool { return l.Values().DHCPUnknownTotal == 7 },
		KeyWANRate:           func() bool { return l.Values().WANRate == 2_500_000 },
		KeyWANRateWindows:    func() bool { return l.Values().WANRateWindows == "07:00-09:00=off" },
	} {
		value := map[string]string{KeyTimezone: "Asia/Tokyo", KeyClaimQuiet: "5s", KeyStoreHighWater: "0.85",
			KeyDHCPUnknownPerMAC: "30", KeyDHCPUnknownTotal: "7", KeyWANRate: "20Mbit/s", KeyWANRateWindows: "07:00-09:00=off"}[key]
		if _, err := l.Set(key, value, Source{Kind: SourcePushed}); err != nil {
			t.Fatal(err)
		}
		if !want() {
			t.Errorf("%s=%s did not take effect: %+v", key, value, l.Values())
		}
	}
	if n := len(l.All()); n != len(Keys()) {
		t.Fatalf("All lists %d settings; want %d", n, len(Keys()))
	}
}

// FuzzCheck: Check gets keys and values from the network (the CLI's arguments travel through
// Temporal to the region); it must never panic, and what it accepts must check as itself.
func FuzzCheck(f *testing.F) {
	for _, s := range All() {
		f.Add(s.Key, Defaults().Get(s.Key))
	}
	f.Add(KeyWakeTimeout, "-9223372036854775808ns")
	f.Add(KeyStoreHighWater, "1e308")
	f.Add(KeyTimezone, "Europe/../Berlin")
	f.Fuzz(func(t *testing.T, key, value string) {
		canon, err := Check(key, value)
		if err != nil {
			return
		}
		again, err := Check(key, canon)
		if err != nil || again != canon {
			t.Fatalf("Check(%q, %q) = %q, but that checks as %q, %v", key, value, canon, again, err)
		}
	})
}

func TestLowWaterStaysBelowHighWater(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
		wantErr          string
	}{
		{"low below high", KeyStoreLowWater, "0.85", ""},
		{"low equal to high", KeyStoreLowWater, "0.9", "store_low_water: 0.9 is not below store_high_water (0.9)"},
		{"low above high", KeyStoreLowWater, "0.95", "store_low_water: 0.95 is not below store_high_water (0.9)"},
		{"high above low", KeyStoreHighWater, "0.81", ""},
		{"high at low", KeyStoreHighWater, "0.8", "store_high_water: 0.8 is not above store_low_water (0.8): lower store_low_water first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := NewLive(Defaults(), Defaults())
			_, err := live.Set(tc.key, tc.value, Source{Kind: SourcePushed})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Fatalf("Set(%s, %s) = %v, want %q", tc.key, tc.value, err, tc.wantErr)
			}
			if v := live.Values(); v.StoreLowWater >= v.StoreHighWater {
				t.Fatalf("low water %v is not below high water %v", v.StoreLowWater, v.StoreHighWater)
			}
		})
	}
}

// A configuration that lowers the high-water mark to or below the default low-water mark gets a
// low-water mark below it.
func TestNewLiveKeepsLowWaterBelowHighWater(t *testing.T) {
	base := Defaults()
	base.StoreHighWater, base.StoreLowWater = 0.7, 0
	v := NewLive(base, Defaults()).Values()
	if v.StoreLowWater != 0.6 {
		t.Fatalf("low water = %v, want 0.6", v.StoreLowWater)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"", 0, false}, {"0", 0, false}, {"4096", 4096, false}, {"2GiB", 2 << 30, false}, {"2 gib", 2 << 30, false},
		{"500MB", 500e6, false}, {"1.5TiB", 3 << 39, false}, {"64KiB", 64 << 10, false},
		{"-1GiB", 0, true}, {"2XB", 0, true}, {"GiB", 0, true}, {"1e3", 0, true}, {"99999999999TiB", 0, true}, {"NaN", 0, true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// FuzzParseSize: sizes come from configuration files and flags; ParseSize must never panic
// and never give a negative size.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"", "0", "2GiB", "500MB", "1.5 TiB", "-1", "1e400", "99999999999999999999TiB", "NaN", ".", "GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}
