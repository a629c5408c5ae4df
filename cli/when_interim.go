package cli

import (
	"fmt"
	"time"
)

// An interim parser of the times task commands take with --at, until the schedules' parser
// (cli/when.go, which knows each region's time zone) replaces it.

// atLayout is the local form of an --at time.
const atLayout = "2006-01-02 15:04"

// parseAt parses an --at TIME: RFC 3339 ("2026-12-03T07:00:00+01:00"), or "YYYY-MM-DD HH:MM"
// in zone loc. A time not after now is refused: a task asked for later must start later.
func parseAt(s string, now time.Time, loc *time.Location) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		var lerr error
		if t, lerr = time.ParseInLocation(atLayout, s, loc); lerr != nil {
			return time.Time{}, fmt.Errorf("--at %q: give a time as YYYY-MM-DD HH:MM (zone %s) or RFC 3339 (2006-01-02T15:04:05+01:00)", clipArg(s), loc)
		}
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--at %s is in the past (it is %s)", t.Format(time.RFC3339), now.In(t.Location()).Format(time.RFC3339))
	}
	return t, nil
}
