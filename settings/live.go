package settings

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Where a setting's effective value comes from.
const (
	SourceDefault = "default" // the built-in default
	SourceConfig  = "config"  // the region's configuration file
	SourcePushed  = "pushed"  // central pushed it (tms region config set)
)

// Source says where a setting's effective value comes from; By, At and Task are set for a
// pushed value.
type Source struct {
	Kind string    // SourceDefault, SourceConfig or SourcePushed
	By   string    // who pushed it (empty if the CLI did not know)
	At   time.Time // when the region applied it
	Task string    // the ConfigureRegion task that pushed it
}

// Effective is a setting's effective value and where it comes from.
type Effective struct {
	Key    string
	Value  string
	Source Source
	// Base is the value without the push: the configuration file's or the default.
	Base string
}

// Live holds a region's effective settings. Reads are lock-free snapshots, so the hot paths
// (a DHCP request, an agent's report) pay an atomic load; Set is serialized. The zero Live is
// not usable: NewLive makes one.
type Live struct {
	cur atomic.Pointer[snapshot]

	mu       sync.Mutex // serializes Set and OnChange
	onChange []func(Values)
}

type snapshot struct {
	v    Values
	base Values
	src  map[string]Source
}

// NewLive holds base, the region's values before any push (its configuration file's, with
// defaults where the file is silent); a value equal to defaults' is shown as a default, any
// other as the configuration file's. Values of base that are not valid are replaced by
// defaults' (the configuration file was validated before: this only guards against callers
// that pass zeros).
func NewLive(base, defaults Values) *Live {
	src := map[string]Source{}
	for _, s := range registry {
		if _, err := s.parse(s.get(base)); err != nil {
			x, _ := s.parse(s.get(defaults))
			s.put(&base, x)
		}
		kind := SourceConfig
		if s.get(base) == s.get(defaults) {
			kind = SourceDefault
		}
		src[s.Key] = Source{Kind: kind}
	}
	if base.StoreLowWater >= base.StoreHighWater {
		// A high-water mark set at or below the default low-water mark, with no low-water mark
		// of its own: eviction goes a tenth below it.
		base.StoreLowWater = max(MinStoreLowWater, math.Round((base.StoreHighWater-0.1)*100)/100)
	}
	l := &Live{}
	l.cur.Store(&snapshot{v: base, base: base, src: src})
	return l
}

// Values returns the effective values.
func (l *Live) Values() Values { return l.cur.Load().v }

// Timezone is the effective IANA zone of the region.
func (l *Live) Timezone() string { return l.cur.Load().v.Timezone }

// WakeTimeout is how long a power-on waits for a woken terminal.
func (l *Live) WakeTimeout() time.Duration { return l.cur.Load().v.WakeTimeout }

// ClaimQuiet is how long a network boot's claim stands before a task's result is taken.
func (l *Live) ClaimQuiet() time.Duration { return l.cur.Load().v.ClaimQuiet }

// StoreHighWater is the store's high-water mark, a fraction of its capacity.
func (l *Live) StoreHighWater() float64 { return l.cur.Load().v.StoreHighWater }

// StoreLowWater is the fraction of the store's capacity eviction brings it down to.
func (l *Live) StoreLowWater() float64 { return l.cur.Load().v.StoreLowWater }

// WANRateAt is the WAN rate cap in force at t, in bytes a second (0: no cap).
func (l *Live) WANRateAt(t time.Time) int64 { return l.cur.Load().v.WANRateAt(t) }

// OnChange calls f with the new values after every Set that changed them (and not for the
// values the holder starts with). f runs while Set holds its lock: it must be quick and must
// not call Set.
func (l *Live) OnChange(f func(Values)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onChange = append(l.onChange, f)
}

// Set makes value key's effective value, from src, and returns the setting as it now stands.
// A value that does not validate changes nothing.
func (l *Live) Set(key, value string, src Source) (Effective, error) {
	canon, err := Check(key, value)
	if err != nil {
		return Effective{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cur.Load()
	v, err := old.v.With(key, canon)
	if err != nil {
		return Effective{}, err
	}
	next := &snapshot{v: v, base: old.base, src: make(map[string]Source, len(old.src))}
	for k, s := range old.src {
		next.src[k] = s
	}
	next.src[key] = src
	l.cur.Store(next)
	if v != old.v {
		for _, f := range l.onChange {
			f(v)
		}
	}
	return next.effective(key), nil
}

// Get returns key's effective value and source.
func (l *Live) Get(key string) (Effective, error) {
	if _, ok := Lookup(key); !ok {
		return Effective{}, fmt.Errorf("%q is not a run-time setting", key)
	}
	return l.cur.Load().effective(key), nil
}

// All returns every setting's effective value, in registry order.
func (l *Live) All() []Effective {
	s := l.cur.Load()
	out := make([]Effective, 0, len(registry))
	for _, r := range registry {
		out = append(out, s.effective(r.Key))
	}
	return out
}

func (s *snapshot) effective(key string) Effective {
	return Effective{Key: key, Value: s.v.Get(key), Source: s.src[key], Base: s.base.Get(key)}
}
