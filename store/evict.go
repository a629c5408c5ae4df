package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"tms/manifest"
)

// EvictOptions say how full a store may be and what is about to come.
type EvictOptions struct {
	// Capacity is the bytes the store may hold (the smaller of its filesystem and its
	// configured size); 0: unknown, and Evict removes nothing.
	Capacity int64
	// HighWater and LowWater are fractions of Capacity: eviction runs when the store's bytes
	// plus Incoming would cross HighWater, and removes versions until they are at most
	// LowWater (or nothing more can go).
	HighWater, LowWater float64
	// Incoming is the stored bytes about to come (a share's missing chunks); 0: none.
	Incoming int64
	// For names what the room is for, in the NoRoomError: "exam@3f2a…". Empty: nothing.
	For string
	// Reason says why eviction runs, for the log ("share", "plan", "high-water").
	Reason string
	// Keep lists versions eviction must not remove even if nothing holds them (the version
	// the room is made for).
	Keep []manifest.ID
	// Log receives a line for every version removed (nil: the store's log).
	Log *slog.Logger
	// beforeRemove, for tests, runs between choosing a version and removing it.
	beforeRemove func(VersionInfo)
}

// Evicted is one version eviction removed.
type Evicted struct {
	VersionInfo
	// Freed is the stored bytes its removal left unreferenced (collected by the GC that ends
	// the eviction).
	Freed int64
}

// EvictResult says what Evict did and how full the store is after it.
type EvictResult struct {
	Evicted []Evicted
	// Used is the store's bytes after eviction and garbage collection; Capacity as given.
	Used, Capacity int64
	// Ran tells whether eviction was needed at all (the store, with Incoming, was above its
	// high-water mark).
	Ran bool
	GC  *GCResult
	// GCPending tells that garbage collection could not run (an import held the store):
	// Used is then the bytes once it has run, an estimate, and the next gc frees them.
	GCPending bool
}

// NoRoomError is Evict's error when even after removing every version it may, the store's
// bytes plus what is to come stay above its high-water mark. It names what holds the space.
type NoRoomError struct {
	Store string
	For   string
	// Need is the bytes to come; Free what the store has below its high-water mark after
	// eviction (negative when it is above it).
	Need, Free int64
	// Held are the versions that stayed because something keeps them, largest first.
	Held []VersionInfo
}

func (e *NoRoomError) Error() string { return e.Message(e.Store) }

// Message is the error's text with who (a region's name, say) in place of the store's.
func (e *NoRoomError) Message(who string) string {
	var b strings.Builder
	what := e.For
	if what == "" {
		what = "what is stored"
	}
	fmt.Fprintf(&b, "%s needs %s for %s, has %s free under its high-water mark", who, FormatBytes(e.Need), what, formatIn(max(e.Free, 0), e.Need))
	if len(e.Held) > 0 {
		b.WriteString("; held: ")
		for i, v := range e.Held {
			if i > 0 {
				b.WriteString(", ")
			}
			if i == 8 {
				fmt.Fprintf(&b, "and %d more", len(e.Held)-i)
				break
			}
			fmt.Fprintf(&b, "%s (%s, %s)", v.Name, heldBy(v), FormatBytes(v.OwnBytes))
		}
	}
	return b.String()
}

func heldBy(v VersionInfo) string {
	var parts []string
	for _, h := range v.Holds {
		if h.Pinned {
			parts = append(parts, "pinned")
		} else {
			parts = append(parts, "in use by "+h.Holder)
		}
	}
	return strings.Join(parts, ", ")
}

// Is makes a NoRoomError match ErrFull.
func (e *NoRoomError) Is(target error) bool { return target == ErrFull }

// ErrFull matches a NoRoomError.
var ErrFull = errors.New("store full")

// FormatBytes prints n in binary units, one decimal: "1.2 GiB".
func FormatBytes(n int64) string { return formatIn(n, n) }

// formatIn prints n in the unit FormatBytes would print ref in, so two figures side by side
// compare at a glance ("needs 1.2 GiB, has 0.3 GiB free").
func formatIn(n, ref int64) string {
	const unit = 1024
	if ref < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := ref / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Evict removes versions, oldest stored first, that nothing holds or pins (and that are not in
// o.Keep), while the store's bytes plus o.Incoming stay above o.LowWater × o.Capacity, then
// collects garbage once. It runs only when the bytes plus Incoming are above o.HighWater ×
// o.Capacity. Every removal goes through Remove, so a hold taken after a version was chosen
// wins: Remove refuses, and eviction goes on with the next one. If the store still cannot take
// Incoming under its high-water mark, Evict returns what it did with a *NoRoomError.
//
// Evict counts the store's bytes afresh (not Usage's cached count) and reads every manifest:
// it is for when the store is about to fill, not for every request.
func (s *Store) Evict(ctx context.Context, o EvictOptions) (EvictResult, error) {
	res := EvictResult{Capacity: o.Capacity}
	log := o.Log
	if log == nil {
		log = s.log
	}
	used, err := s.countBytes(ctx)
	if err != nil {
		return res, err
	}
	res.Used = used
	if o.Capacity <= 0 {
		return res, nil
	}
	high := int64(o.HighWater * float64(o.Capacity))
	low := int64(o.LowWater * float64(o.Capacity))
	if low > high {
		low = high
	}
	if used+o.Incoming <= high {
		return res, nil
	}
	res.Ran = true
	sc, err := s.scanVersions(ctx)
	if err != nil {
		return res, err
	}
	keep := map[manifest.ID]bool{}
	for _, id := range o.Keep {
		keep[id] = true
	}
	est := used - sc.garbage // the bytes once garbage is collected
	var held []VersionInfo
	for _, v := range sc.infos {
		if v.Held() || keep[v.ID] {
			if !keep[v.ID] {
				held = append(held, v)
			}
			continue
		}
		if est+o.Incoming <= low {
			continue
		}
		if o.beforeRemove != nil {
			o.beforeRemove(v)
		}
		m, err := s.GetManifest(ctx, v.ID)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return res, err
		}
		ref, _ := manifest.ParseRef(v.Name + "@" + v.ID.String())
		_, err = s.Remove(ctx, ref)
		var he *HeldError
		if errors.As(err, &he) {
			// A task took the version between our choice and the removal: it wins.
			log.Info("eviction passed a version taken meanwhile", "image", v.Name, "version", v.ID.Short(), "reason", o.Reason, "held", he.Error())
			v.Holds = he.Holds
			held = append(held, v)
			continue
		}
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return res, err
		}
		freed := sc.drop(m.Manifest)
		est -= freed + int64(len(m.Encoded))
		res.Evicted = append(res.Evicted, Evicted{VersionInfo: v, Freed: freed})
		log.Info("evicted an image version to make room", "image", v.Name, "version", v.ID.Short(), "stored", v.Stored,
			"freed", freed, "reason", o.Reason, "for", o.For)
	}
	if len(res.Evicted) > 0 || sc.garbage > 0 {
		gc, err := s.GC(ctx)
		switch {
		case errors.Is(err, ErrBusy):
			// An import (a share, a capture) holds the store; it may run for hours. The
			// removals stand, and the next gc frees their chunks: decide on the estimate.
			log.Warn("eviction could not collect garbage now: the next gc frees the chunks", "evicted", len(res.Evicted), "err", err)
			res.Used, res.GCPending = est, true
		case err != nil:
			return res, fmt.Errorf("eviction removed %d versions, then garbage collection failed: %w", len(res.Evicted), err)
		default:
			res.GC = &gc
			if res.Used, err = s.countBytes(ctx); err != nil {
				return res, err
			}
		}
	}
	if res.Used+o.Incoming > high {
		// What holds the space: every version kept, largest own bytes first.
		sort.SliceStable(held, func(i, j int) bool { return held[i].OwnBytes > held[j].OwnBytes })
		return res, &NoRoomError{Store: s.String(), For: o.For, Need: o.Incoming, Free: high - res.Used, Held: held}
	}
	return res, nil
}

// countBytes lists the store and adds up its objects' sizes, and refreshes Usage's count.
func (s *Store) countBytes(ctx context.Context) (int64, error) {
	var used int64
	if err := s.b.List(ctx, "", func(o ObjectInfo) error {
		used += o.Size
		return nil
	}); err != nil {
		return 0, fmt.Errorf("counting the bytes of store %s: %w", s, err)
	}
	return used, nil
}
