package settings

import (
	"strings"
	"testing"
	"time"
)

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Window
		err  string
	}{
		{"22:00-06:00", Window{22 * 60, 6 * 60}, ""},
		{"8:30-16:00", Window{8*60 + 30, 16 * 60}, ""},
		{" 00:00 - 24:00 ", Window{}, "starts where it ends"},
		{"18:00-24:00", Window{18 * 60, 24 * 60}, ""},
		{"24:00-06:00", Window{}, "is not a time of day"},
		{"22:00", Window{}, "want HH:MM-HH:MM"},
		{"22:60-23:00", Window{}, "is not a time of day"},
		{"22:00-23", Window{}, `"23" is not a time of day`},
		{"ab:cd-01:00", Window{}, "is not a time of day"},
		{"-1:00-02:00", Window{}, `"" is not a time of day`},
		{"07:00-07:00", Window{}, "starts where it ends"},
		{strings.Repeat("1", 40), Window{}, "longer than"},
	} {
		got, err := ParseWindow(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseWindow(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseWindow(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := ParseWindow(got.String()); err != nil || back != got {
			t.Errorf("%v does not read back: %v, %v", got, back, err)
		}
	}
}

func TestWindowNext(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	night := Window{22 * 60, 6 * 60}
	day := Window{8 * 60, 16 * 60}
	for _, tc := range []struct {
		w                 Window
		now, open, closes string
	}{
		{night, "2026-12-03 12:00", "2026-12-03 22:00", "2026-12-04 06:00"}, // before
		{night, "2026-12-03 23:30", "2026-12-03 23:30", "2026-12-04 06:00"}, // inside, before midnight
		{night, "2026-12-04 05:00", "2026-12-04 05:00", "2026-12-04 06:00"}, // inside, after midnight
		{night, "2026-12-04 06:00", "2026-12-04 22:00", "2026-12-05 06:00"}, // just closed
		{day, "2026-12-03 16:30", "2026-12-04 08:00", "2026-12-04 16:00"},   // after: tomorrow
		{day, "2026-12-03 08:00", "2026-12-03 08:00", "2026-12-03 16:00"},   // at the opening
		// The night clocks go back (2026-10-25 03:00 CEST → 02:00 CET): wall-clock times hold.
		{night, "2026-10-24 12:00", "2026-10-24 22:00", "2026-10-25 06:00"},
		{Window{18 * 60, 24 * 60}, "2026-12-03 19:00", "2026-12-03 19:00", "2026-12-04 00:00"},
	} {
		open, closes := tc.w.Next(at(tc.now), berlin)
		if !open.Equal(at(tc.open)) || !closes.Equal(at(tc.closes)) {
			t.Errorf("%v at %s: %s–%s, want %s–%s", tc.w, tc.now, open.In(berlin).Format(time.DateTime), closes.In(berlin).Format(time.DateTime), tc.open, tc.closes)
		}
	}
	if open, closes := (Window{}).Next(at("2026-12-03 12:00"), berlin); !open.Equal(at("2026-12-03 12:00")) || !closes.IsZero() {
		t.Errorf("no window: %v–%v, want now and never", open, closes)
	}
}

func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"22:00-06:00", "8:30-16:00", "18:00-24:00", "x", "-", "99:99-00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWindow(s)
		if err != nil {
			return
		}
		if back, err := ParseWindow(w.String()); err != nil || back != w {
			t.Fatalf("%q → %v does not read back: %v %v", s, w, back, err)
		}
		open, closes := w.Next(time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC), time.UTC)
		if !closes.After(open) {
			t.Fatalf("%v: closes %v not after opens %v", w, closes, open)
		}
	})
}
