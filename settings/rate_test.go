package settings

import (
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int64
		wantErr  string // part of the error; empty: accepted
	}{
		{"megabytes", "10MB/s", 10_000_000, ""},
		{"megabits", "80Mbit/s", 10_000_000, ""},
		{"megabits bps", "80Mbps", 10_000_000, ""},
		{"kibibytes", "500KiB/s", 500 * 1024, ""},
		{"mebibytes", "20MiB/s", 20 << 20, ""},
		{"gibibits", "1Gibit/s", 1 << 27, ""},
		{"gigabytes", "1GB/s", 1_000_000_000, ""},
		{"kilobytes lower k", "64kB/s", 64_000, ""},
		{"kilobytes upper K", "64KB/s", 64_000, ""},
		{"kilobits", "800kbit/s", 100_000, ""},
		{"bytes", "123456B/s", 123456, ""},
		{"bits", "800000bit/s", 100_000, ""},
		{"fraction", "1.5MB/s", 1_500_000, ""},
		{"fraction of bits rounds", "0.1Mbit/s", 12_500, ""},
		{"rounds to nearest byte", "80001bit/s", 10_000, ""},
		{"space before unit", "10 MB/s", 10_000_000, ""},
		{"trimmed", " 10MB/s ", 10_000_000, ""},
		{"zero", "0", 0, ""},
		{"zero with unit", "0MB/s", 0, ""},
		{"off", "off", 0, ""},
		{"OFF", "OFF", 0, ""},
		{"upper bound", "100Gbit/s", MaxRate, ""},
		{"lower bound", "10kB/s", MinRate, ""},

		{"no per second", "10 MB", 0, `rate "10 MB": no unit per second, say 10MB/s`},
		{"no per second bits", "80Mbit", 0, `say 80Mbit/s`},
		{"no unit", "1000", 0, `rate "1000": no unit: say 1000MB/s or 1000Mbit/s`},
		{"ambiguous Mb", "10Mb/s", 0, `Mb is ambiguous: say 10MB/s (bytes) or 10Mbit/s (bits)`},
		{"ambiguous mb", "10mb/s", 0, `mb is ambiguous`},
		{"ambiguous kb", "10kb/s", 0, `say 10kB/s (bytes) or 10kbit/s`},
		{"unknown unit", "10XB/s", 0, `unknown unit "XB"`},
		{"terabytes", "1TB/s", 0, `unknown unit "TB"`},
		{"per minute", "10MB/min", 0, `no unit per second`},
		{"negative", "-10MB/s", 0, `not negative`},
		{"absurd", "101Gbit/s", 0, `more than 100Gbit/s`},
		{"huge", "99999999999999999999999GB/s", 0, `more than 100Gbit/s`},
		{"too slow", "9kB/s", 0, `less than 10kB/s`},
		{"too slow but not zero", "1bit/s", 0, `less than 10kB/s`},
		{"empty", "", 0, `empty`},
		{"two dots", "1.2.3MB/s", 0, `not a number`},
		{"leading dot", ".5MB/s", 0, `not a number`},
		{"trailing dot", "5.MB/s", 0, `not a number`},
		{"exponent", "1e9B/s", 0, `unknown unit`},
		{"plus sign", "+5MB/s", 0, `not a number`},
		{"too long", strings.Repeat("1", 40) + "B/s", 0, `at most 32`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRate(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestFormatRateRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "off"}, {10_000_000, "10MB/s"}, {500 << 10, "500KiB/s"}, {20 << 20, "20MiB/s"},
		{1 << 30, "1GiB/s"}, {MaxRate, "12500MB/s"}, {12345, "12345B/s"}, {64_000, "64kB/s"},
	} {
		if got := FormatRate(tc.n); got != tc.want {
			t.Errorf("FormatRate(%d) = %q; want %q", tc.n, got, tc.want)
		}
		if back, err := ParseRate(FormatRate(tc.n)); err != nil || back != tc.n {
			t.Errorf("ParseRate(FormatRate(%d)) = %d, %v", tc.n, back, err)
		}
	}
}

func TestParseRateWindows(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     string // canonical; empty: refused
		wantErr  string
	}{
		{"day and night", "08:00-16:00=5MB/s,16:00-08:00=50MB/s", "08:00-16:00=5MB/s,16:00-08:00=50MB/s", ""},
		{"sorted by start", "16:00-08:00=50MB/s, 08:00-16:00=40Mbit/s", "08:00-16:00=5MB/s,16:00-08:00=50MB/s", ""},
		{"ends at midnight", "18:00-24:00=off", "18:00-00:00=off", ""},
		{"short hour", "8:00-9:30=1MB/s", "08:00-09:30=1MB/s", ""},
		{"none", "none", "none", ""},
		{"empty is none", "", "none", ""},

		{"overlap", "08:00-16:00=5MB/s,15:00-17:00=1MB/s", "", "overlap"},
		{"overlap across midnight", "22:00-06:00=5MB/s,05:00-07:00=1MB/s", "", "overlap"},
		{"empty window", "08:00-08:00=5MB/s", "", "starts where it ends"},
		{"whole day as midnight", "00:00-24:00=5MB/s", "", "starts where it ends"},
		{"bad hour", "25:00-08:00=5MB/s", "", `"25:00" is not a time of day`},
		{"bad minute", "08:60-09:00=5MB/s", "", `"08:60" is not a time of day`},
		{"24 as start", "24:00-08:00=5MB/s", "", `"24:00" is not a time of day`},
		{"signed minute", "08:+1-09:00=5MB/s", "", `is not a time of day`},
		{"no rate", "08:00-16:00", "", "not HH:MM-HH:MM=RATE"},
		{"bad rate", "08:00-16:00=5 MB", "", "no unit per second"},
		{"too many", strings.Repeat("1:00-2:00=off,", 8) + "3:00-4:00=off", "", "9 rate windows: at most 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, err := ParseRateWindows(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRateWindows(%q) = %v, %v; want an error containing %q", tc.in, ws, err, tc.wantErr)
				}
				return
			}
			if err != nil || FormatRateWindows(ws) != tc.want {
				t.Fatalf("ParseRateWindows(%q) = %q, %v; want %q", tc.in, FormatRateWindows(ws), err, tc.want)
			}
		})
	}
}

func TestWANRateAtWindowsAcrossMidnight(t *testing.T) {
	v := Defaults()
	v.Timezone = "Europe/Berlin"
	v.WANRate = 20_000_000
	var err error
	if v, err = v.With(KeyWANRateWindows, "08:00-16:00=5MB/s,22:00-06:00=off"); err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	at := func(h, m int) time.Time { return time.Date(2026, 12, 3, h, m, 0, 0, berlin).UTC() }
	for _, tc := range []struct {
		name string
		t    time.Time
		want int64
	}{
		{"before the day window", at(7, 59), 20_000_000},
		{"day window starts", at(8, 0), 5_000_000},
		{"day window's last minute", at(15, 59), 5_000_000},
		{"day window ended", at(16, 0), 20_000_000},
		{"night window before midnight", at(23, 30), 0},
		{"night window after midnight", at(0, 0), 0},
		{"night window's last minute", at(5, 59), 0},
		{"night window ended", at(6, 0), 20_000_000},
	} {
		if got := v.WANRateAt(tc.t); got != tc.want {
			t.Errorf("%s (%s Berlin): %d; want %d", tc.name, tc.t.In(berlin).Format("15:04"), got, tc.want)
		}
	}
	// In UTC, 08:00 Berlin is 07:00: the window follows the region's zone.
	if got := v.WANRateAt(time.Date(2026, 12, 3, 7, 30, 0, 0, time.UTC)); got != 5_000_000 {
		t.Errorf("07:30 UTC (08:30 Berlin): %d; want the day window's 5MB/s", got)
	}
	v.WANRateWindows = NoWindows
	if got := v.WANRateAt(at(9, 0)); got != 20_000_000 {
		t.Errorf("without windows: %d; want wan_rate", got)
	}
}

// FuzzParseRate: rates come from the network (a CLI's --rate and config pushes travel through
// Temporal to the region); ParseRate must never panic, must keep to its bounds, and what it
// accepts must format and parse back to itself.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"10MB/s", "80Mbit/s", "500KiB/s", "0", "off", "1.5GB/s", "10 MB", "-1B/s",
		"100Gbit/s", "100.0000000001Gbit/s", "10Mb/s", "80Mbps", "9999999999999999999999999999B/s", "0.0000001kB/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseRate(s)
		if err != nil {
			return
		}
		if n != 0 && (n < MinRate || n > MaxRate) {
			t.Fatalf("ParseRate(%q) = %d: out of bounds", s, n)
		}
		if back, err := ParseRate(FormatRate(n)); err != nil || back != n {
			t.Fatalf("ParseRate(%q) = %d, formatted %q, which parses as %d, %v", s, n, FormatRate(n), back, err)
		}
	})
}

// FuzzParseRateWindows: as FuzzParseRate, for wan_rate_windows.
func FuzzParseRateWindows(f *testing.F) {
	for _, s := range []string{"08:00-16:00=5MB/s,16:00-08:00=50MB/s", "none", "", "18:00-24:00=off", "1:00-2:00=1MB/s,2:00-1:00=2MB/s",
		"08:00-08:00=1MB/s", "23:59-00:00=10kB/s", ",,,", "08:00-16:00==5MB/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ws, err := ParseRateWindows(s)
		if err != nil {
			return
		}
		for i, w := range ws {
			if w.Start < 0 || w.Start >= 24*60 || w.End < 0 || w.End >= 24*60 || w.Start == w.End {
				t.Fatalf("ParseRateWindows(%q): window %d is %+v", s, i, w)
			}
		}
		canon := FormatRateWindows(ws)
		again, err := ParseRateWindows(canon)
		if err != nil || FormatRateWindows(again) != canon {
			t.Fatalf("ParseRateWindows(%q) formats as %q, which parses as %q, %v", s, canon, FormatRateWindows(again), err)
		}
	})
}
