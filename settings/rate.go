package settings

import (
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds of a WAN rate cap, in bytes per second.
const (
	// MaxRate is 100 Gbit/s: a cap above what any school's WAN carries is a typing mistake.
	MaxRate = 100_000_000_000 / 8
	// MinRate is the smallest cap: slower, a peer's stream deadlines (64 KiB of a response in
	// every 30 s) cut a transfer's requests off while they wait for their turn.
	MinRate = 10_000
	// MaxRateWindows bounds the windows of wan_rate_windows.
	MaxRateWindows = 8
	// maxRateLen bounds a rate before it is parsed.
	maxRateLen = 32
)

// A rate's units: how many bytes per second one of them is (bits count an eighth).
var rateUnits = map[string]*big.Rat{
	"B": big.NewRat(1, 1), "kB": big.NewRat(1000, 1), "KB": big.NewRat(1000, 1),
	"MB": big.NewRat(1e6, 1), "GB": big.NewRat(1e9, 1),
	"KiB": big.NewRat(1<<10, 1), "MiB": big.NewRat(1<<20, 1), "GiB": big.NewRat(1<<30, 1),
	"bit": big.NewRat(1, 8), "kbit": big.NewRat(1000, 8), "Kbit": big.NewRat(1000, 8),
	"Mbit": big.NewRat(1e6, 8), "Gbit": big.NewRat(1e9, 8),
	"Kibit": big.NewRat(1<<10, 8), "Mibit": big.NewRat(1<<20, 8), "Gibit": big.NewRat(1<<30, 8),
}

// bpsUnits are the "…ps" spellings of bits per second (80Mbps).
var bpsUnits = map[string]string{"bps": "bit", "kbps": "kbit", "Kbps": "kbit", "Mbps": "Mbit", "Gbps": "Gbit"}

const unitHelp = "B, kB, MB, GB, KiB, MiB, GiB (bytes) or bit, kbit, Mbit, Gbit, Kibit, Mibit, Gibit (bits), per second, like 10MB/s or 80Mbit/s"

// ParseRate reads a WAN rate cap: a number and a unit per second, like "10MB/s", "80Mbit/s",
// "500KiB/s" or "1.5GB/s" (k, M, G are powers of 1000; Ki, Mi, Gi of 1024; B is a byte, bit a
// bit; "80Mbps" is 80Mbit/s), or "0" or "off" for no cap. It returns bytes per second, rounded
// to the nearest byte; a cap below MinRate or above MaxRate (100 Gbit/s) is refused. Its errors
// say what to write instead. ParseRate is pure: workflow code may call it.
func ParseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxRateLen {
		return 0, fmt.Errorf("rate of %d bytes: at most %d, like 10MB/s", len(s), maxRateLen)
	}
	if s == "0" || strings.EqualFold(s, "off") {
		return 0, nil
	}
	bad := func(format string, a ...any) (int64, error) {
		return 0, fmt.Errorf("rate %q: "+format, append([]any{s}, a...)...)
	}
	if s == "" {
		return bad("empty: say 10MB/s, or off for no cap")
	}
	if s[0] == '-' {
		return bad("a cap is not negative: say 10MB/s, or off for no cap")
	}
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return bad("not a number and a unit per second, like 10MB/s")
	}
	n, ok := new(big.Rat).SetString(num)
	if !ok {
		return bad("not a number and a unit per second, like 10MB/s")
	}
	if unit == "" {
		return bad("no unit: say %sMB/s or %sMbit/s", num, num)
	}
	per, hasPer := strings.CutSuffix(unit, "/s")
	if b, ok := bpsUnits[unit]; ok {
		per, hasPer = b, true
	}
	if !hasPer {
		if _, ok := rateUnits[unit]; ok {
			return bad("no unit per second, say %s%s/s", num, unit)
		}
		return bad("no unit per second: use %s", unitHelp)
	}
	mult, ok := rateUnits[per]
	if !ok {
		if strings.HasSuffix(per, "b") && len(per) <= 2 {
			// Mb, kb: bits to some, bytes to others.
			p := strings.ToUpper(per[:len(per)-1])
			if p == "K" {
				p = "k"
			}
			return bad("%s is ambiguous: say %s%sB/s (bytes) or %s%sbit/s (bits)", per, num, p, num, p)
		}
		return bad("unknown unit %q: use %s", per, unitHelp)
	}
	n.Mul(n, mult)
	if n.Sign() == 0 {
		return 0, nil
	}
	// Round to the nearest byte.
	q, r := new(big.Int).QuoRem(n.Num(), n.Denom(), new(big.Int))
	if new(big.Int).Lsh(r, 1).Cmp(n.Denom()) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > MaxRate {
		return bad("more than 100Gbit/s: no WAN carries that; say off for no cap")
	}
	if q.Int64() < MinRate {
		return bad("less than %s: too slow for a transfer's requests to keep their deadlines", FormatRate(MinRate))
	}
	return q.Int64(), nil
}

// rateFormats are the units FormatRate writes, largest first.
var rateFormats = []struct {
	unit string
	size int64
}{{"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"kB", 1000}}

// FormatRate writes a rate in bytes per second as ParseRate reads it: "off" for 0, else in
// the largest unit that divides it ("10MB/s" for 80Mbit/s, "500KiB/s", "1234B/s").
func FormatRate(n int64) string {
	if n == 0 {
		return "off"
	}
	for _, f := range rateFormats {
		if n%f.size == 0 {
			return strconv.FormatInt(n/f.size, 10) + f.unit + "/s"
		}
	}
	return strconv.FormatInt(n, 10) + "B/s"
}

// RateWindow is a time of day with a WAN rate cap of its own: from Start (inclusive) to End
// (exclusive), in minutes after midnight in the region's zone; End before Start crosses
// midnight. Rate 0 is no cap.
type RateWindow struct {
	Start, End int
	Rate       int64
}

// Contains reports whether minute m of the day (0 to 1439) is in the window.
func (w RateWindow) Contains(m int) bool {
	if w.Start < w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End
}

func (w RateWindow) String() string {
	return clock(w.Start) + "-" + clock(w.End) + "=" + FormatRate(w.Rate)
}

func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

// NoWindows is the canonical value of wan_rate_windows without windows.
const NoWindows = "none"

// ParseRateWindows reads a list of time-of-day windows with their caps, like
// "08:00-16:00=5MB/s,16:00-08:00=50MB/s" ("" or "none": no windows). Times are HH:MM in the
// region's zone, 24:00 may end a window, a window that ends before it starts crosses
// midnight; windows may not overlap. The windows come back ordered by start.
func ParseRateWindows(s string) ([]RateWindow, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == NoWindows {
		return nil, nil
	}
	if len(s) > MaxValueLen {
		return nil, fmt.Errorf("rate windows of %d bytes: at most %d", len(s), MaxValueLen)
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxRateWindows {
		return nil, fmt.Errorf("%d rate windows: at most %d", len(parts), MaxRateWindows)
	}
	var ws []RateWindow
	for _, p := range parts {
		p = strings.TrimSpace(p)
		span, rate, ok := strings.Cut(p, "=")
		from, to, ok2 := strings.Cut(span, "-")
		if !ok || !ok2 {
			return nil, fmt.Errorf("rate window %q: not HH:MM-HH:MM=RATE, like 08:00-16:00=5MB/s", p)
		}
		var w RateWindow
		var err error
		if w.Start, err = parseClock(strings.TrimSpace(from), false); err != nil {
			return nil, fmt.Errorf("rate window %q: %w", p, err)
		}
		if w.End, err = parseClock(strings.TrimSpace(to), true); err != nil {
			return nil, fmt.Errorf("rate window %q: %w", p, err)
		}
		if w.End == 24*60 {
			w.End = 0
		}
		if w.Start == w.End {
			return nil, fmt.Errorf("rate window %q: starts where it ends; for the whole day set wan_rate", p)
		}
		if w.Rate, err = ParseRate(rate); err != nil {
			return nil, fmt.Errorf("rate window %q: %w", p, err)
		}
		for _, o := range ws {
			if overlap(o, w) {
				return nil, fmt.Errorf("rate windows %s and %q overlap", o, p)
			}
		}
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b RateWindow) int { return a.Start - b.Start })
	return ws, nil
}

// parseClock reads HH:MM (or H:MM), 00:00 to 23:59, and 24:00 if end.
func parseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(h) < 1 || len(h) > 2 || len(m) != 2 ||
		h[0] == '+' || h[0] == '-' || m[0] == '+' || m[0] == '-' ||
		hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && (!end || mm != 0)) {
		return 0, fmt.Errorf("%q is not a time of day HH:MM, like 08:00", s)
	}
	return hh*60 + mm, nil
}

// overlap reports whether two windows share a minute.
func overlap(a, b RateWindow) bool {
	spans := func(w RateWindow) [][2]int {
		if w.Start < w.End {
			return [][2]int{{w.Start, w.End}}
		}
		return [][2]int{{w.Start, 24 * 60}, {0, w.End}}
	}
	for _, x := range spans(a) {
		for _, y := range spans(b) {
			if x[0] < y[1] && y[0] < x[1] {
				return true
			}
		}
	}
	return false
}

// FormatRateWindows writes windows as ParseRateWindows reads them ("none" for no windows).
func FormatRateWindows(ws []RateWindow) string {
	if len(ws) == 0 {
		return NoWindows
	}
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = w.String()
	}
	return strings.Join(s, ",")
}

// WANRateAt is the WAN rate cap in force at t, in bytes per second (0: none): the cap of the
// window of wan_rate_windows that holds t in the region's zone, if one does, else wan_rate.
func (v Values) WANRateAt(t time.Time) int64 {
	ws, err := ParseRateWindows(v.WANRateWindows)
	if err != nil || len(ws) == 0 {
		return v.WANRate
	}
	loc, err := time.LoadLocation(v.Timezone)
	if err != nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	m := lt.Hour()*60 + lt.Minute()
	for _, w := range ws {
		if w.Contains(m) {
			return w.Rate
		}
	}
	return v.WANRate
}
