package settings

import (
	"fmt"
	"strings"
	"time"
)

// Window is a daily stretch of wall-clock time in a region's zone, "22:00-06:00" (crossing
// midnight) or "08:00-16:30": a plan's shares run inside it. Start and End are minutes since
// midnight; End may be 24:00. The zero Window is not valid: a window that is always open is
// no window (leave it out).
type Window struct{ Start, End int }

// MaxWindowLen bounds the text of a window.
const MaxWindowLen = 32

// ParseWindow reads HH:MM-HH:MM. The error says what is wrong and what is wanted.
func ParseWindow(s string) (Window, error) {
	if len(s) > MaxWindowLen {
		return Window{}, fmt.Errorf("window %.32q…: longer than %d characters; want HH:MM-HH:MM", s, MaxWindowLen)
	}
	from, to, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("window %q: want HH:MM-HH:MM, like 22:00-06:00", s)
	}
	start, err := parseClock(strings.TrimSpace(from), false)
	if err != nil {
		return Window{}, fmt.Errorf("window %q: start: %v", s, err)
	}
	end, err := parseClock(strings.TrimSpace(to), true)
	if err != nil {
		return Window{}, fmt.Errorf("window %q: end: %v", s, err)
	}
	if start == end%(24*60) {
		return Window{}, fmt.Errorf("window %q: starts where it ends; a window open all day is no window (leave it out)", s)
	}
	return Window{Start: start, End: end}, nil
}

// String is the window as ParseWindow reads it.
func (w Window) String() string {
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.Start/60, w.Start%60, w.End/60, w.End%60)
}

// IsZero tells whether w is the zero Window (no window: always open).
func (w Window) IsZero() bool { return w == Window{} }

// Next returns the stretch of w in zone loc that is open at now, or else the next one: open is
// now if w is open at now. A zero Window is always open: now and the zero time (never closes).
// Days are the zone's calendar days, so the window keeps its wall-clock times across changes
// of daylight saving time.
func (w Window) Next(now time.Time, loc *time.Location) (open, close time.Time) {
	if w.IsZero() {
		return now, time.Time{}
	}
	local := now.In(loc)
	y, m, d := local.Date()
	for day := -1; day <= 2; day++ {
		o := time.Date(y, m, d+day, w.Start/60, w.Start%60, 0, 0, loc)
		endDay := d + day
		if w.End <= w.Start {
			endDay++
		}
		c := time.Date(y, m, endDay, 0, w.End, 0, 0, loc)
		if c.After(now) {
			if o.Before(now) {
				o = now
			}
			return o, c
		}
	}
	panic("settings: a daily window has no stretch within three days") // cannot happen: each day has one
}
