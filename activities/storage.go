package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"tms/manifest"
	"tms/metrics"
	"tms/settings"
	"tms/store"
	"tms/transfer"
)

// MaxReportedImages bounds the versions a region lists in its status report (and in
// `tms image ls --region`), so a report stays small; the rest are counted in ImageCount.
const MaxReportedImages = 1000

// ImageDescriptor is one version a region's store holds, as the region reports it.
type ImageDescriptor struct {
	Name    string
	Tags    []string `json:",omitempty"`
	Version string
	// StoredBytes is its chunks' stored bytes; OwnBytes those no other version of the store
	// shares, what removing it frees.
	StoredBytes, OwnBytes int64
	// Stored is when it was published in this store: its manifest object's modification time.
	Stored time.Time
	// LastDeployed is when a deploy or update of a terminal last finished writing it (zero:
	// never, as far as the region's records go).
	LastDeployed time.Time `json:",omitzero"`
	Pinned       bool      `json:",omitempty"`
	PinnedBy     string    `json:",omitempty"`
	// Holds are the tasks, plans and schedules holding it, with their expiry.
	Holds []HoldInfo `json:",omitempty"`
}

// HoldInfo is one holder of a version: "deploy/region-b/lab/lab", "plan/exam-week",
// "schedule:NAME".
type HoldInfo struct {
	Holder string
	Until  time.Time
}

// StoreInfo is how full a region's store is and its marks.
type StoreInfo struct {
	// Capacity is the smaller of the filesystem's size and region.store_capacity (0: unknown).
	Capacity, Used int64
	// HighWater and LowWater are the run-time settings store_high_water and store_low_water.
	HighWater, LowWater float64
}

// storeMarks reads the store's marks from the region's settings (the defaults without any).
func (r *Region) storeMarks() (high, low float64) {
	d := settings.Defaults()
	high, low = d.StoreHighWater, d.StoreLowWater
	if w, ok := r.Settings.(interface {
		StoreHighWater() float64
		StoreLowWater() float64
	}); ok {
		high, low = w.StoreHighWater(), w.StoreLowWater()
	}
	return high, low
}

// storeInfo reads the store's use and capacity: min(filesystem, StoreCapacity).
func (r *Region) storeInfo(ctx context.Context) (StoreInfo, error) {
	var si StoreInfo
	si.HighWater, si.LowWater = r.storeMarks()
	if r.Usage != nil {
		var err error
		if si.Used, si.Capacity, err = r.Usage(ctx); err != nil {
			return si, err
		}
	} else if r.Store != nil {
		u, err := r.Store.Usage(ctx)
		if err != nil {
			return si, err
		}
		si.Used, si.Capacity = u.Used, u.Capacity
	}
	si.Capacity = EffectiveCapacity(si.Capacity, r.StoreCapacity)
	return si, nil
}

// EffectiveCapacity is the smaller of a filesystem's size and a configured capacity, either
// of which may be 0 (unknown, not set).
func EffectiveCapacity(filesystem, configured int64) int64 {
	switch {
	case configured <= 0:
		return filesystem
	case filesystem <= 0:
		return configured
	}
	return min(filesystem, configured)
}

// describeCache keeps the store's version descriptions between status reports: describing
// reads every manifest and lists every chunk, too much for every 15 s, and on a large store
// longer than a report may take. Reports take the last description and start a new one in the
// background when the store's byte count changed or store.UsageMaxAge passed; holds, pins and
// last-deployed times are read afresh each time.
type describeCache struct {
	mu      sync.Mutex
	at      time.Time // when vs was taken; zero: none, or stale
	used    int64
	vs      []store.VersionInfo
	taken   bool // vs was taken once: reports may use it
	running bool // a background description is under way
	err     error
}

// describeTimeout bounds a background description of the store.
const describeTimeout = 10 * time.Minute

// errNotDescribed is describeStore's answer to a report while the first description of the
// store is still under way.
var errNotDescribed = errors.New("the store's first description is under way")

// invalidate makes the next report describe the store again.
func (c *describeCache) invalidate() {
	c.mu.Lock()
	c.at = time.Time{}
	c.mu.Unlock()
}

// describeStore lists the versions the store holds, oldest stored first, at most
// MaxReportedImages, and how many there are. fresh describes the store now (an admin's
// listing); otherwise the last description serves, and a stale one is renewed in the
// background.
func (r *Region) describeStore(ctx context.Context, used int64, fresh bool) ([]ImageDescriptor, int, error) {
	c := &r.describe
	now := r.now()
	var vs []store.VersionInfo
	if fresh {
		var err error
		if vs, err = r.Store.Versions(ctx); err != nil {
			return nil, 0, err
		}
		c.mu.Lock()
		c.vs, c.at, c.used, c.taken, c.err = vs, now, used, true, nil
		c.mu.Unlock()
	} else {
		c.mu.Lock()
		if !c.running && (c.at.IsZero() || c.used != used || now.Sub(c.at) >= store.UsageMaxAge) {
			c.running = true
			go r.redescribe(context.WithoutCancel(ctx), used)
		}
		var taken bool
		var err error
		vs, taken, err = c.vs, c.taken, c.err
		c.mu.Unlock()
		if !taken {
			if err == nil {
				err = errNotDescribed
			}
			return nil, 0, err
		}
	}
	holds, err := r.Store.AllHolds(ctx)
	if err != nil {
		return nil, 0, err
	}
	deployed, err := r.lastDeployed(ctx)
	if err != nil {
		return nil, 0, err
	}
	wall := time.Now()
	out := make([]ImageDescriptor, 0, min(len(vs), MaxReportedImages))
	for i, v := range vs {
		if i == MaxReportedImages {
			break
		}
		d := ImageDescriptor{Name: v.Name, Tags: v.Tags, Version: v.ID.String(), StoredBytes: v.StoredBytes, OwnBytes: v.OwnBytes,
			Stored: v.Stored.UTC(), LastDeployed: deployed[v.ID.String()]}
		for _, h := range holds {
			if h.Version != v.ID || !h.Live(wall) {
				continue
			}
			if h.Pinned {
				d.Pinned, d.PinnedBy = true, h.By
				continue
			}
			d.Holds = append(d.Holds, HoldInfo{Holder: h.Holder, Until: h.Until})
		}
		out = append(out, d)
	}
	return out, len(vs), nil
}

// redescribe describes the store into the cache, in the background of a report.
func (r *Region) redescribe(ctx context.Context, used int64) {
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	at := r.now()
	vs, err := r.Store.Versions(ctx)
	c := &r.describe
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = false
	if err != nil {
		c.err = err
		c.at = at // try again after UsageMaxAge, not at every report
		r.logger(ctx).Warn("could not describe the store's versions for the region's report", "err", err)
		return
	}
	if c.taken && c.at.After(at) {
		return // a fresh listing came in meanwhile
	}
	c.vs, c.at, c.used, c.taken, c.err = vs, at, used, true, nil
}

func (r *Region) lastDeployed(ctx context.Context) (map[string]time.Time, error) {
	if r.Inventory == nil {
		return nil, nil
	}
	return r.Inventory.LastDeployed(ctx)
}

// MakeRoomInput asks a region to make room for a version ahead of need (a plan).
type MakeRoomInput struct {
	Version string
	// Bytes is the stored bytes the version needs; 0: none beyond what the store holds (a
	// version the store holds needs none; for one it lacks, MakeRoom then only brings the
	// store under its high-water mark, and the share's own check makes the room it needs).
	Bytes int64
	// Holder, if set, holds Version for it until Until ("plan/exam-week"): a hold that can be
	// taken before the version is in the store, so eviction never takes it once it arrives.
	// Until is capped at store.MaxHoldDuration ahead; a longer plan calls MakeRoom again.
	Holder string
	Until  time.Time
}

// EvictedImage is one version eviction removed.
type EvictedImage struct {
	Name, Version string
	// Bytes is the stored bytes its removal freed.
	Bytes  int64
	Stored time.Time
}

// MakeRoomResult says what MakeRoom removed and how full the store is after it.
type MakeRoomResult struct {
	Evicted        []EvictedImage
	Used, Capacity int64
}

// MakeRoom holds Version for Holder until Until (a reservation: the version need not be in
// the store yet), then evicts versions, oldest stored first and never a pinned or held one,
// until the store can take Bytes under its high-water mark (down to its low-water mark). It
// fails with the non-retryable ErrNoRoom, naming what holds the space, if it cannot.
func (r *Region) MakeRoom(ctx context.Context, in MakeRoomInput) (MakeRoomResult, error) {
	var res MakeRoomResult
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return res, ErrBadVersion.New(err.Error(), err)
	}
	if in.Bytes < 0 {
		return res, ErrBadInput.New(fmt.Sprintf("make room: %d bytes", in.Bytes), nil)
	}
	what := "version " + id.Short()
	v, err := r.Store.GetManifest(ctx, id)
	switch {
	case err == nil:
		what = v.Manifest.Meta.Name + "@" + id.Short()
		in.Bytes = 0 // here already
	case !errors.Is(err, store.ErrNotFound):
		return res, err
	}
	if in.Holder != "" {
		if err := store.ValidateHolder(in.Holder); err != nil {
			return res, ErrBadInput.New("make room: "+err.Error(), err)
		}
		until := in.Until
		if limit := time.Now().Add(store.MaxHoldDuration - time.Minute); until.After(limit) {
			until = limit
		}
		if !until.After(time.Now()) {
			return res, ErrBadInput.New(fmt.Sprintf("make room: the hold for %s ends at %s, which is past", in.Holder, in.Until.Format(time.RFC3339)), nil)
		}
		if err := r.Store.Reserve(ctx, id, in.Holder, until); err != nil {
			return res, err
		}
	}
	er, err := r.evict(ctx, id, what, in.Bytes, metrics.EvictPlan)
	res.Used, res.Capacity = er.Used, er.Capacity
	for _, e := range er.Evicted {
		res.Evicted = append(res.Evicted, EvictedImage{Name: e.Name, Version: e.ID.String(), Bytes: e.Freed, Stored: e.Stored})
	}
	return res, err
}

// evict runs the store's eviction for incoming bytes of version id (zero: none), counting and
// logging what it removed; a store that cannot make room gives ErrNoRoom.
func (r *Region) evict(ctx context.Context, id manifest.ID, what string, incoming int64, reason string) (store.EvictResult, error) {
	si, err := r.storeInfo(ctx)
	if err != nil {
		return store.EvictResult{}, err
	}
	o := store.EvictOptions{Capacity: si.Capacity, HighWater: si.HighWater, LowWater: si.LowWater, Incoming: incoming,
		For: what, Reason: reason, Log: r.logger(ctx)}
	if !id.IsZero() {
		o.Keep = []manifest.ID{id}
	}
	res, err := r.Store.Evict(ctx, o)
	r.Metrics.Evicted(reason, len(res.Evicted))
	if len(res.Evicted) > 0 {
		r.describe.invalidate()
	}
	var nr *store.NoRoomError
	if errors.As(err, &nr) {
		return res, ErrNoRoom.New(nr.Message(r.ID), err, res.Evicted)
	}
	return res, err
}

// logger is the region's logger (a discarding one without).
func (r *Region) logger(context.Context) *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

// EvictInput asks a region to run eviction if its store is above its high-water mark.
type EvictInput struct{}

// EvictIfFull runs eviction when the store's bytes are above its high-water mark (no bytes
// incoming): the region's service workflow calls it when a status report says so. A store
// that stays above the mark (everything held) is logged, not failed: nothing waits for it.
func (r *Region) EvictIfFull(ctx context.Context, _ EvictInput) (MakeRoomResult, error) {
	er, err := r.evict(ctx, manifest.ID{}, "", 0, metrics.EvictHighWater)
	res := MakeRoomResult{Used: er.Used, Capacity: er.Capacity}
	for _, e := range er.Evicted {
		res.Evicted = append(res.Evicted, EvictedImage{Name: e.Name, Version: e.ID.String(), Bytes: e.Freed, Stored: e.Stored})
	}
	if ErrNoRoom.Matches(err) {
		r.logger(ctx).Warn("the store stays above its high-water mark: everything left is pinned or held", "err", err)
		return res, nil
	}
	return res, err
}

// preflight runs before a share moves a byte: it reads the version's manifest from src,
// estimates the stored bytes of the chunks the store lacks and, if they would take the store
// above its high-water mark, evicts; ErrNoRoom if they cannot fit even then.
func (r *Region) preflight(ctx context.Context, src transfer.Source, id manifest.ID) error {
	if _, err := r.Store.GetManifest(ctx, id); err == nil {
		return nil // here already: nothing to bring
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	si, err := r.storeInfo(ctx)
	if err != nil || si.Capacity <= 0 {
		return err // capacity unknown: nothing to check against
	}
	b, err := src.GetManifestBytes(ctx, id)
	if err != nil {
		return fmt.Errorf("manifest %s from %s: %w", id.Short(), src, err)
	}
	m, err := manifest.Decode(b)
	if err != nil || manifest.VersionID(m.Hash, b) != id {
		return ErrSourceCorrupt.New(fmt.Sprintf("manifest %s from %s is not the version asked for", id.Short(), src), err)
	}
	missing, _, err := r.Store.MissingBytes(ctx, m, storedPerChunk(ctx, src, id, m))
	if err != nil {
		return err
	}
	high := int64(si.HighWater * float64(si.Capacity))
	if si.Used+missing <= high {
		return nil
	}
	_, err = r.evict(ctx, id, m.Meta.Name+"@"+id.Short(), missing, metrics.EvictShare)
	return err
}

// storeAdmin answers the admin ops on the region's store: images, pin, unpin.
func (r *Region) storeAdmin(ctx context.Context, in AdminInput) (AdminResult, error) {
	var res AdminResult
	if r.Store == nil {
		return res, ErrBadInput.New("region "+r.ID+" has no store", nil)
	}
	if in.Op == OpImages {
		si, err := r.storeInfo(ctx)
		if err != nil {
			return res, err
		}
		res.Store = &si
		res.Images, res.ImageCount, err = r.describeStore(ctx, si.Used, true)
		return res, err
	}
	ref, err := manifest.ParseRef(in.Image)
	if err != nil {
		return res, ErrBadImage.New(err.Error(), err)
	}
	if err := store.ValidatePinBy(in.By); err != nil {
		return res, ErrBadInput.New(err.Error(), err)
	}
	v, err := r.Store.Resolve(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return res, ErrNotFound.New(fmt.Sprintf("region %s holds no image %s", r.ID, in.Image), err)
	}
	if err != nil {
		if errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrUnavailable) {
			return res, err
		}
		return res, ErrBadImage.New(fmt.Sprintf("region %s: %v", r.ID, err), err) // an ambiguous version prefix
	}
	switch in.Op {
	case OpPin:
		_, err := r.Store.GetPin(ctx, v.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, err
		}
		if res.Changed = err != nil; !res.Changed {
			break // pinned already: the first pin's record stands
		}
		if err := r.Store.Pin(ctx, v.ID, in.By); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return res, ErrNotFound.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
			}
			return res, err
		}
	case OpUnpin:
		if res.Changed, err = r.Store.Unpin(ctx, v.ID); err != nil {
			return res, err
		}
	}
	r.describe.invalidate()
	res.Images = []ImageDescriptor{{Name: v.Manifest.Meta.Name, Version: v.ID.String(), Pinned: in.Op == OpPin, PinnedBy: in.By}}
	return res, nil
}

// LocationForgetter is a Catalog that can forget a location (the state catalog can).
type LocationForgetter interface {
	ForgetLocation(ctx context.Context, id manifest.ID, region string) error
}

var _ LocationForgetter = StateCatalog{}

// ForgetInput names versions a region no longer holds.
type ForgetInput struct {
	Region   string
	Versions []string
}

// ForgetLocation drops Region from the catalog's locations of Versions, so LocateVersion no
// longer counts on the region for them (central's service workflow calls it when a region's
// report no longer lists versions an earlier report did: evicted or removed). At most
// MaxReportedImages versions a call.
func (c *Central) ForgetLocation(ctx context.Context, in ForgetInput) error {
	f, ok := c.Catalog.(LocationForgetter)
	if !ok {
		return nil
	}
	if len(in.Versions) > MaxReportedImages {
		return ErrBadInput.New(fmt.Sprintf("forget %d locations: at most %d a call", len(in.Versions), MaxReportedImages), nil)
	}
	for _, v := range in.Versions {
		id, err := manifest.ParseID(v)
		if err != nil {
			return ErrBadVersion.New(err.Error(), err)
		}
		if err := f.ForgetLocation(ctx, id, in.Region); err != nil {
			return err
		}
	}
	return nil
}

// storedPerChunk is the source's stored bytes of version id over its distinct chunks, when the
// source says (its stats); 0 otherwise, and MissingBytes counts each chunk at its uncompressed
// size, an upper bound.
func storedPerChunk(ctx context.Context, src transfer.Source, id manifest.ID, m *manifest.Manifest) int64 {
	ss, ok := src.(transfer.StatsSource)
	if !ok {
		return 0
	}
	st, err := ss.GetStats(ctx, id)
	n := store.DistinctChunks(m)
	if err != nil || st.StoredBytes <= 0 || n == 0 {
		return 0 // none kept, or an older peer: the upper bound
	}
	return (st.StoredBytes + n - 1) / n
}
