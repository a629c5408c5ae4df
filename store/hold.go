package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"tms/manifest"
)

// Holds keep a version in the store while a task uses it: a deploy streaming it to terminals, a
// peer pulling it, a schedule about to share it. Remove refuses to delete a held version (with a
// *HeldError naming its holders) and GC never frees a held version's chunks. A hold is an object
// in the store itself, so every process that opens the store (the region's server, the offline
// CLI) sees the same holds:
//
//	holds/<version>/<sha256(holder)[:16]>.json   {"version":…, "holder":…, "until":…, …}
//
// A hold lasts until its expiry, so a task that crashed cannot keep a version forever; a task
// that runs longer renews its hold (Hold again with a later expiry, or Keep).
//
// Hold and Remove order their writes as the store's locks do (write first, then check the other
// side), so of a hold and a removal of the same version that overlap, at least one sees the
// other: Remove writes a removal marker (removing/<version>.json), then lists the version's
// holds; Hold writes its hold, then checks for a removal marker and for the manifest.

// Limits on holds, as tms writes them and as it accepts them when reading.
const (
	// MaxHolderLen bounds a holder's name.
	MaxHolderLen = 256
	// MaxHoldDuration bounds how far ahead a hold may expire; a longer task renews.
	MaxHoldDuration = 7 * 24 * time.Hour
	// maxHoldFile bounds a hold object's size: a holder, a version id, times and a host name.
	maxHoldFile = 2048
	// renewMargin is how long a hold must still stand for Hold to renew it in place.
	renewMargin = 30 * time.Second
)

// Hold is one task's claim on a version.
type Hold struct {
	Version manifest.ID `json:"version"`
	// Holder names the task, for people: "deploy/region-b/lab/pc-07/…", "share/region-c/…".
	Holder string `json:"holder"`
	// Until is when the hold lapses unless renewed.
	Until time.Time `json:"until"`
	// Host is the host that took or last renewed the hold.
	Host    string    `json:"host,omitempty"`
	Renewed time.Time `json:"renewed"`
	// Ahead marks a hold taken before the version is in the store (see Reserve): garbage
	// collection does not stop for it when the version's manifest is absent.
	Ahead bool `json:"ahead,omitempty"`
	// Pinned marks a pin (see Pin): a hold by PinHolder that does not expire. Pins are kept
	// under pins/, not holds/; Holds and AllHolds list them with the holds.
	Pinned bool `json:"-"`
	// By is who pinned the version (pins only).
	By string `json:"-"`
}

// Live reports whether the hold still stands at now. A pin always stands.
func (h Hold) Live(now time.Time) bool { return h.Pinned || now.Before(h.Until) }

func (h Hold) String() string {
	if h.Pinned {
		if h.By != "" {
			return fmt.Sprintf("%s (by %s, since %s)", PinHolder, h.By, h.Renewed.Local().Format(untilFormat(h.Renewed)))
		}
		return PinHolder
	}
	return fmt.Sprintf("%s until %s", h.Holder, h.Until.Local().Format(untilFormat(h.Until)))
}

// untilFormat shows a time of today as 15:04, anything else with its date.
func untilFormat(t time.Time) string {
	now := time.Now()
	if y, m, d := t.Local().Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return "15:04"
	}
	return time.DateTime
}

// HeldError is the error of Remove when a version it would delete is held. Match it with
// errors.As; it also matches ErrBusy.
type HeldError struct {
	Store string
	// Holds are the live holds that stood in the way, by version.
	Holds []Hold
}

func (e *HeldError) Error() string {
	byVersion := map[manifest.ID][]string{}
	var order []manifest.ID
	for _, h := range e.Holds {
		if _, ok := byVersion[h.Version]; !ok {
			order = append(order, h.Version)
		}
		byVersion[h.Version] = append(byVersion[h.Version], h.String())
	}
	var parts []string
	for _, id := range order {
		parts = append(parts, fmt.Sprintf("version %s is in use by %s", id.Short(), strings.Join(byVersion[id], ", ")))
	}
	return fmt.Sprintf("store %s: %s; wait for it to finish or cancel it", e.Store, strings.Join(parts, "; "))
}

// Is makes a HeldError match ErrBusy.
func (e *HeldError) Is(target error) bool { return target == ErrBusy }

func holdPrefix(id manifest.ID) string { return "holds/" + id.String() + "/" }

func holderKey(holder string) string {
	sum := sha256.Sum256([]byte(holder))
	return hex.EncodeToString(sum[:16])
}

func holdKey(id manifest.ID, holder string) string {
	return holdPrefix(id) + holderKey(holder) + ".json"
}

func removingKey(id manifest.ID) string { return "removing/" + id.String() + ".json" }

// ValidateHolder checks a holder's name: 1 to MaxHolderLen bytes of printable UTF-8.
func ValidateHolder(holder string) error {
	switch {
	case holder == "":
		return errors.New("holder is empty")
	case len(holder) > MaxHolderLen:
		return fmt.Errorf("holder is %d bytes long, more than %d", len(holder), MaxHolderLen)
	case !utf8.ValidString(holder):
		return errors.New("holder is not UTF-8")
	}
	for _, r := range holder {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("holder %q has a character that is not printable", holder)
		}
	}
	return nil
}

// ParseHold decodes a hold object as stored under key (holds/<version>/<holder>.json). It is
// strict and bounded: a hold that is too large, not JSON, for another version or holder than
// its key says, or without an expiry is an error saying so.
func ParseHold(key string, b []byte) (Hold, error) {
	var h Hold
	if len(b) > maxHoldFile {
		return h, fmt.Errorf("hold is %d bytes, more than %d", len(b), maxHoldFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&h); err != nil {
		return h, fmt.Errorf("hold is not JSON: %w", err)
	}
	if dec.More() {
		return h, errors.New("trailing data after the hold")
	}
	if err := ValidateHolder(h.Holder); err != nil {
		return h, err
	}
	if h.Until.IsZero() {
		return h, errors.New("hold has no expiry")
	}
	if len(h.Host) > 255 {
		return h, fmt.Errorf("host is %d bytes long, more than 255", len(h.Host))
	}
	if want := holdKey(h.Version, h.Holder); key != want {
		return h, fmt.Errorf("hold of %s by %q belongs at %s", h.Version.Short(), h.Holder, want)
	}
	return h, nil
}

// Hold keeps version id in the store for holder until until, or renews holder's hold with a new
// expiry. The version must be published: Hold gives ErrNotFound for a version the store does not
// hold (or that a Remove is deleting right now), so a task learns at once that its version is gone.
func (s *Store) Hold(ctx context.Context, id manifest.ID, holder string, until time.Time) error {
	return s.hold(ctx, id, holder, until, false)
}

// Reserve is Hold for a version that may not be in the store yet: a plan that will bring it,
// making room for it first, or a deploy that starts while a copy still brings it (package
// arrival). If the version is absent the hold is kept all the same (with
// Ahead set), so a Remove of the version once it arrives refuses, and garbage collection does
// not stop for it; if the version is present Reserve is Hold.
func (s *Store) Reserve(ctx context.Context, id manifest.ID, holder string, until time.Time) error {
	return s.hold(ctx, id, holder, until, true)
}

func (s *Store) hold(ctx context.Context, id manifest.ID, holder string, until time.Time, ahead bool) error {
	// Bad requests are plain errors: the store was not asked.
	if err := ValidateHolder(holder); err != nil {
		return fmt.Errorf("hold of %s: %w", id.Short(), err)
	}
	now := time.Now()
	if !until.After(now) {
		return fmt.Errorf("hold of %s by %s: expiry %s is already past", id.Short(), holder, until.Format(time.RFC3339))
	}
	if until.Sub(now) > MaxHoldDuration {
		return fmt.Errorf("hold of %s by %s: expiry %s is more than %s ahead; renew the hold instead", id.Short(), holder, until.Format(time.RFC3339), MaxHoldDuration)
	}
	host, _ := os.Hostname()
	h := Hold{Version: id, Holder: holder, Until: until.UTC().Round(time.Second), Host: host, Renewed: now.UTC().Truncate(time.Second), Ahead: ahead}
	if h.Until.Before(until) {
		h.Until = h.Until.Add(time.Second) // never shorter than asked
	}
	b, _ := json.Marshal(h)
	key := holdKey(id, holder)
	// A renewal of a hold that stands for a while yet only moves its expiry: the version has been
	// held all along, so a removal deciding now sees a hold, and stepping back for it would let
	// it through. (A hold about to lapse goes through the whole dance again.)
	renewal := false
	if old, err := s.getSmall(ctx, key, maxHoldFile); err == nil {
		if prev, err := ParseHold(key, old); err == nil && prev.Live(now.Add(renewMargin)) {
			renewal = true
		}
	} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
		return err
	}
	return s.claim(ctx, id, key, b, renewal, ahead, "hold")
}

// claim writes key (a hold or a pin of version id, b its content) so that no Remove of id
// decides without seeing it: after the write it looks for a removal under way, and while one is,
// it steps back (deletes key), waits and writes again, so the removal can finish either way.
// standing says the claim stood already (a renewal), so the removal has seen it all along.
// Then the version must be published (ErrNotFound names what and deletes key), unless ahead:
// a claim of a version still to come.
func (s *Store) claim(ctx context.Context, id manifest.ID, key string, b []byte, standing, ahead bool, what string) error {
	for {
		if err := s.b.Put(ctx, key, b); err != nil {
			return err
		}
		if standing {
			break
		}
		// Check after write: a removal that has not seen our claim has written its marker by now.
		removing, err := s.removalUnderWay(ctx, id)
		if err != nil {
			return err
		}
		if !removing {
			break
		}
		// A removal is deciding: step back so that it can finish either way, then look again.
		if err := s.b.Delete(ctx, key); err != nil {
			return err
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	if _, err := s.b.Stat(ctx, manifestKey(id)); err != nil {
		if errors.Is(err, ErrNotFound) && ahead {
			return nil // a reservation of what is still to come
		}
		if errors.Is(err, ErrNotFound) {
			s.b.Delete(context.WithoutCancel(ctx), key)
			return &Error{Kind: ErrNotFound, Store: s.b.String(), What: "version " + id.String(), Err: errors.New("nothing to " + what)}
		}
		return err
	}
	return nil
}

// removalUnderWay reports whether a Remove of version id has written its marker and is alive.
func (s *Store) removalUnderWay(ctx context.Context, id manifest.ID) (bool, error) {
	o, err := s.b.Stat(ctx, removingKey(id))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return time.Since(o.ModTime) < LockStale, nil
}

// Release drops holder's hold on version id. Releasing a hold that is not there is not an error.
func (s *Store) Release(ctx context.Context, id manifest.ID, holder string) error {
	return s.b.Delete(ctx, holdKey(id, holder))
}

// ReleaseAll drops every hold of holder, on whatever version: what a task calls when it ends.
func (s *Store) ReleaseAll(ctx context.Context, holder string) error {
	suffix := "/" + holderKey(holder) + ".json"
	var keys []string
	if err := s.b.List(ctx, "holds/", func(o ObjectInfo) error {
		if strings.HasSuffix(o.Key, suffix) {
			keys = append(keys, o.Key)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.b.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// Holds lists the live holds on version id, its pin first, then latest expiry first. A hold
// object that cannot be read gives an ErrCorrupt error naming it: nobody can tell whether it
// still stands.
func (s *Store) Holds(ctx context.Context, id manifest.ID) ([]Hold, error) {
	var out []Hold
	p, err := s.GetPin(ctx, id)
	switch {
	case err == nil:
		out = append(out, p)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	hs, err := s.listHolds(ctx, holdPrefix(id), false)
	return append(out, hs...), err
}

// AllHolds lists every hold in the store, pins and expired holds included (Live tells them
// apart), by version, each version's pin first and then latest expiry first.
func (s *Store) AllHolds(ctx context.Context) ([]Hold, error) {
	pins, err := s.Pins(ctx)
	if err != nil {
		return nil, err
	}
	hs, err := s.listHolds(ctx, "holds/", true)
	if err != nil {
		return nil, err
	}
	out := append(pins, hs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Version.String() < out[j].Version.String() })
	return out, nil
}

func (s *Store) listHolds(ctx context.Context, prefix string, expired bool) ([]Hold, error) {
	var objs []ObjectInfo
	if err := s.b.List(ctx, prefix, func(o ObjectInfo) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		return nil, err
	}
	now := time.Now()
	var out []Hold
	for _, o := range objs {
		k := o.Key
		b, err := s.getSmall(ctx, k, maxHoldFile)
		if errors.Is(err, ErrNotFound) {
			continue // released while we listed
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: k, Err: errors.New("larger than a hold may be (delete the object if no task holds this version)")}
		}
		if err != nil {
			return nil, err
		}
		h, err := ParseHold(k, b)
		if err != nil {
			return nil, &Error{Kind: ErrCorrupt, Store: s.b.String(), What: k, Err: fmt.Errorf("%w (delete the object if no task holds this version)", err)}
		}
		if limit := o.ModTime.Add(MaxHoldDuration); !o.ModTime.IsZero() && h.Until.After(limit) {
			h.Until = limit // written by something other than Hold: no hold outlasts its bound
		}
		if expired || h.Live(now) {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Version != out[j].Version {
			return out[i].Version.String() < out[j].Version.String()
		}
		return out[i].Until.After(out[j].Until)
	})
	return out, nil
}

// markRemoving writes the removal markers of versions, then lists their live holds: if there are
// any, it takes the markers back and returns a *HeldError; otherwise the caller deletes the
// versions and then calls the returned function to drop the markers.
func (s *Store) markRemoving(ctx context.Context, ids []manifest.ID) (func(), error) {
	host, _ := os.Hostname()
	b, _ := json.Marshal(map[string]any{"host": host, "pid": os.Getpid(), "created": time.Now().UTC().Truncate(time.Second)})
	done := func() {
		for _, id := range ids {
			s.b.Delete(context.WithoutCancel(ctx), removingKey(id))
		}
	}
	for _, id := range ids {
		if err := s.b.Put(ctx, removingKey(id), b); err != nil {
			done()
			return nil, err
		}
	}
	var held []Hold
	for _, id := range ids {
		hs, err := s.Holds(ctx, id)
		if err != nil {
			done()
			return nil, err
		}
		held = append(held, hs...)
	}
	if len(held) > 0 {
		done()
		return nil, &HeldError{Store: s.b.String(), Holds: held}
	}
	return done, nil
}

// Keeper renews a hold in the background until Stop; see Keep.
type Keeper struct {
	stop context.CancelFunc
	done chan struct{}
}

// Keep holds version id for holder for ttl and renews the hold every ttl/3 until Stop, which
// releases it. A process that dies leaves a hold that lapses within ttl. Renewal failures are
// logged; the hold then lapses at its last expiry.
func (s *Store) Keep(ctx context.Context, id manifest.ID, holder string, ttl time.Duration) (*Keeper, error) {
	if ttl < 3*time.Second {
		ttl = 3 * time.Second
	}
	if err := s.Hold(ctx, id, holder, time.Now().Add(ttl)); err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	k := &Keeper{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(k.done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				if err := s.Release(context.WithoutCancel(rctx), id, holder); err != nil {
					s.log.Warn("could not release hold", "version", id.Short(), "holder", holder, "err", err)
				}
				return
			case <-t.C:
				if err := s.Hold(rctx, id, holder, time.Now().Add(ttl)); err != nil && rctx.Err() == nil {
					s.log.Warn("could not renew hold", "version", id.Short(), "holder", holder, "err", err)
				}
			}
		}
	}()
	return k, nil
}

// Stop ends the renewals and releases the hold.
func (k *Keeper) Stop() {
	k.stop()
	<-k.done
}
