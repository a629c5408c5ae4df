package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"tms/activities"
)

// Times an admin gives (`tms schedule create --at 07:00`) are wall-clock times of a region:
// its classes start at 07:00 where the region is, wherever the admin types the command. A
// region reports its zone to central (region.timezone); --timezone overrides it.

// atForms is what --at accepts, for error messages.
const atForms = "HH:MM (today), YYYY-MM-DD HH:MM, or RFC 3339 like 2026-12-03T07:00:00+01:00"

// parseAt reads TIME of --at in zone loc: HH:MM[:SS] today, YYYY-MM-DD HH:MM[:SS], or an
// RFC 3339 time (which carries its own offset). A time that is not after now is refused,
// naming it and the zone.
func (a *App) parseAt(s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	now := a.now().In(loc)
	var t time.Time
	var err error
	switch {
	case s == "":
		return t, fmt.Errorf("--at is empty: want %s", atForms)
	case strings.Contains(s, "T"):
		t, err = time.Parse(time.RFC3339, s)
	case strings.Contains(s, "-"):
		layout := "2006-01-02 15:04"
		if strings.Count(s, ":") == 2 {
			layout = "2006-01-02 15:04:05"
		}
		t, err = time.ParseInLocation(layout, s, loc)
	default:
		layout := "15:04"
		if strings.Count(s, ":") == 2 {
			layout = "15:04:05"
		}
		var clock time.Time
		clock, err = time.ParseInLocation(layout, s, loc)
		y, m, d := now.Date()
		t = time.Date(y, m, d, clock.Hour(), clock.Minute(), clock.Second(), 0, loc)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("--at %q: %s; want %s", s, parseProblem(err), atForms)
	}
	t = t.In(loc)
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--at %q is in the past: %s in %s, and it is %s there now", s,
			t.Format("2006-01-02 15:04:05"), loc, now.Format("2006-01-02 15:04:05"))
	}
	return t, nil
}

// parseProblem says which part of a time did not parse.
func parseProblem(err error) string {
	var pe *time.ParseError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	if pe.Message != "" {
		return strings.TrimPrefix(pe.Message, ": ")
	}
	if pe.ValueElem != "" {
		return fmt.Sprintf("cannot read %q (expected %s)", pe.ValueElem, elemName(pe.LayoutElem))
	}
	return fmt.Sprintf("%q is missing its %s", pe.Value, elemName(pe.LayoutElem))
}

func elemName(layoutElem string) string {
	switch layoutElem {
	case "2006":
		return "year"
	case "01":
		return "month"
	case "02":
		return "day"
	case "15":
		return "hour"
	case "04":
		return "minute"
	case "05":
		return "second"
	case "Z07:00":
		return "zone offset"
	}
	return "'" + layoutElem + "'"
}

// loadZone reads a --timezone or a region's zone: an IANA name.
func loadZone(name string) (*time.Location, error) {
	loc, err := time.LoadLocation(name)
	if err != nil || name == "" || name == "Local" {
		return nil, fmt.Errorf("time zone %q is not an IANA zone name, like Europe/Berlin or America/New_York", name)
	}
	return loc, nil
}

// regionZone is the zone times for a region are written in: override (--timezone) if given,
// else the zone the region reported to central (tclient.regionInfo).
func regionZone(r activities.RegionInfo, override string) (*time.Location, error) {
	if override != "" {
		loc, err := loadZone(override)
		if err != nil {
			return nil, usageError{fmt.Errorf("--timezone: %w", err)}
		}
		return loc, nil
	}
	if r.Timezone == "" {
		return nil, fmt.Errorf("region %s has not reported its time zone (its server runs an older tms): give --timezone", r.ID)
	}
	loc, err := loadZone(r.Timezone)
	if err != nil {
		return nil, fmt.Errorf("region %s: %w; give --timezone", r.ID, err)
	}
	return loc, nil
}

// regionInfo is region's descriptor from central; an unknown region is an error naming the
// known ones.
func (c *tclient) regionInfo(ctx context.Context, region string) (activities.RegionInfo, error) {
	// One command asks central once: a task with --at looks its region up for the time zone
	// and again before it starts.
	if c.regions == nil || *c.regions == nil {
		res, err := c.centralAdmin(ctx, "regions")
		if err != nil {
			return activities.RegionInfo{}, err
		}
		if c.regions == nil {
			c.regions = new([]activities.RegionInfo)
		}
		*c.regions = res.Regions
	}
	var known []string
	for _, r := range *c.regions {
		if r.ID == region {
			return r, nil
		}
		known = append(known, r.ID)
	}
	slices.Sort(known)
	if len(known) == 0 {
		return activities.RegionInfo{}, fmt.Errorf("unknown region %s; central knows no region yet (a region registers itself when its server starts)", region)
	}
	return activities.RegionInfo{}, fmt.Errorf("unknown region %s; known: %s", region, strings.Join(known, ", "))
}

// cronShorthands are the @ forms Temporal's cron accepts.
var cronShorthands = []string{"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}

// cronFields are the five fields of a cron expression, with their ranges and names.
var cronFields = []struct {
	name     string
	min, max int
	names    []string // names[i] stands for min+i
}{
	{name: "minute", max: 59},
	{name: "hour", max: 23},
	{name: "day of month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{name: "day of week", max: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}}, // 0 and 7: Sunday
}

// checkCron checks a 5-field cron expression (minute hour day-of-month month day-of-week; each
// field *, N, N-M, with /STEP, lists with commas, names for months and days, 0 or 7 for
// Sunday) or one of
// cronShorthands, and says which field is wrong. Temporal reads it; this check runs first so
// the error names the field.
func checkCron(expr string) error {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "@") {
		if slices.Contains(cronShorthands, expr) {
			return nil
		}
		return fmt.Errorf("cron %q: unknown shorthand; want one of %s or five fields", expr, strings.Join(cronShorthands, ", "))
	}
	fields := strings.Fields(expr)
	if len(fields) != 5 {
		return fmt.Errorf("cron %q has %d field(s); want 5: minute hour day-of-month month day-of-week, like \"0 7 * * mon-fri\"", expr, len(fields))
	}
	for i, f := range fields {
		spec := cronFields[i]
		for item := range strings.SplitSeq(f, ",") {
			if err := checkCronItem(item, spec.min, spec.max, spec.names); err != nil {
				return fmt.Errorf("cron %q: field %d (%s) %q: %w", expr, i+1, spec.name, f, err)
			}
		}
	}
	return nil
}

func checkCronItem(item string, lo, hi int, names []string) error {
	if item == "" {
		return errors.New("empty list item")
	}
	rng, step, hasStep := strings.Cut(item, "/")
	if hasStep {
		n, err := strconv.Atoi(step)
		if err != nil || n < 1 {
			return fmt.Errorf("step %q is not a positive number", step)
		}
	}
	if rng == "*" {
		return nil
	}
	value := func(s string) (int, error) {
		for i, n := range names {
			if strings.EqualFold(s, n) {
				return lo + i, nil
			}
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			if len(names) > 0 {
				return 0, fmt.Errorf("%q is not a number from %d to %d or a name (%s)", s, lo, hi, strings.Join(names, ", "))
			}
			return 0, fmt.Errorf("%q is not a number from %d to %d", s, lo, hi)
		}
		if n < lo || n > hi {
			return 0, fmt.Errorf("%d is out of range %d-%d", n, lo, hi)
		}
		return n, nil
	}
	from, to, isRange := strings.Cut(rng, "-")
	a, err := value(from)
	if err != nil {
		return err
	}
	if !isRange {
		return nil
	}
	b, err := value(to)
	if err != nil {
		return err
	}
	if b < a {
		return fmt.Errorf("range %s runs backwards", rng)
	}
	return nil
}
