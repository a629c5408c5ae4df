// Package activities holds the side effects of tms's workflows, as methods on structs that
// carry their dependencies: Central for the central worker (task queue "central") and Region
// for a region's worker ("region.<id>"). Workers register filled-in structs; workflows name
// the methods through nil pointers.
package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"tms/arrival"
	"tms/manifest"
	"tms/metrics"
	"tms/settings"
	"tms/signing"
	"tms/state"
	"tms/store"
	"tms/transfer"
	"tms/wanrate"
)

// Task queues.
const CentralQueue = "central"

// RegionQueue is the task queue of region id's worker.
func RegionQueue(id string) string { return "region." + id }

// Location is a region holding a verified copy of a version.
type Location struct {
	Region   string
	Endpoint string // the region's data endpoint, for peer pulls
	Labels   map[string]string
}

// Catalog is what the central activities need of the central catalog.
type Catalog interface {
	// Resolve finds the version an image reference names.
	Resolve(ctx context.Context, ref string) (manifest.ID, error)
	// VerifiedLocations lists the regions holding a verified copy of version id.
	VerifiedLocations(ctx context.Context, id manifest.ID) ([]Location, error)
	// Region returns a region's descriptor.
	Region(ctx context.Context, id string) (Location, error)
	// SetVerified records that region holds a verified copy of version id.
	SetVerified(ctx context.Context, id manifest.ID, region string) error
	// RecordVersion records a version and central's signature of it, pointing NAME:tag at it
	// unless tag is empty.
	RecordVersion(ctx context.Context, v VersionInfo, sig signing.Signature, tag string) error
	// UpsertRegion creates or updates a region's descriptor.
	UpsertRegion(ctx context.Context, r RegionInfo) error
	// Regions lists the regions; Images lists the versions with their tags and locations.
	Regions(ctx context.Context) ([]RegionInfo, error)
	Images(ctx context.Context) ([]ImageInfo, error)
	// StoredBytes returns a version's stored bytes as recorded when it was registered.
	StoredBytes(ctx context.Context, id manifest.ID) (int64, error)
}

// Central holds the central worker's activities.
type Central struct {
	Catalog Catalog
	// Key is central's signing key: it signs the versions central registers and the grants it
	// mints. Only central holds it; regions and agents have the public half.
	Key      *signing.PrivateKey
	GrantTTL time.Duration // default 15 minutes
	// Settings keeps the run-time settings regions applied; nil: the Catalog, if it does.
	Settings RegionSettingsStore
	// Planner starts the plans of scheduled deploys and updates; nil: none are made.
	Planner SchedulePlans
	// PlannerInterval is how often central's schedule planner runs (0: its default); the
	// central worker starts the planner with it.
	PlannerInterval time.Duration
}

// errNoKey is what the central activities that sign answer when central has no key.
func errNoKey(what string) error {
	return ErrNoSigningKey.New("central has no signing key (central.signing_key_file; tms central init makes one): it cannot "+what, nil)
}

// LocateInput names an image and the region that wants it.
type LocateInput struct {
	Image  string // NAME, NAME:TAG or NAME@VERSION
	Target string
}

// MaxSources bounds the sources LocateVersion lists, best first.
const MaxSources = 8

// LocateResult says where the version is, best source first (at most MaxSources).
type LocateResult struct {
	Version   string
	TargetHas bool
	Sources   []Location
}

// LocateVersion resolves the image and lists the regions holding a verified copy, ordered by
// topology: regions on the target's site first.
func (c *Central) LocateVersion(ctx context.Context, in LocateInput) (LocateResult, error) {
	var res LocateResult
	if _, err := manifest.ParseRef(in.Image); err != nil {
		return res, ErrBadImage.New(err.Error(), err)
	}
	target, err := c.Catalog.Region(ctx, in.Target)
	if errors.Is(err, store.ErrNotFound) {
		return res, ErrUnknownRegion.New("unknown region "+in.Target, err)
	}
	if err != nil {
		return res, err
	}
	id, err := c.Catalog.Resolve(ctx, in.Image)
	if errors.Is(err, store.ErrNotFound) {
		return res, ErrUnknownImage.New("image "+in.Image+" is not in the catalog", err)
	}
	if err != nil {
		return res, err
	}
	locs, err := c.Catalog.VerifiedLocations(ctx, id)
	if err != nil {
		return res, err
	}
	res.Version = id.String()
	for _, l := range locs {
		if l.Region == in.Target {
			res.TargetHas = true
		} else {
			res.Sources = append(res.Sources, l)
		}
	}
	OrderSources(target, res.Sources)
	// A share tries two peers and relays from the rest, one after another: a handful is all
	// it can use, and once an image is in 1,000 regions the whole list would put 1,000
	// locations into every share's history.
	if len(res.Sources) > MaxSources {
		res.Sources = res.Sources[:MaxSources]
	}
	if !res.TargetHas && len(res.Sources) == 0 {
		return res, ErrNoSource.New("no region holds a verified copy of "+in.Image, nil)
	}
	return res, nil
}

// OrderSources sorts sources so those sharing the target's "site" label come first, then those
// sharing its "zone", then the rest, each group by region id.
func OrderSources(target Location, sources []Location) {
	rank := func(l Location) int {
		switch {
		case target.Labels["site"] != "" && l.Labels["site"] == target.Labels["site"]:
			return 0
		case target.Labels["zone"] != "" && l.Labels["zone"] == target.Labels["zone"]:
			return 1
		}
		return 2
	}
	sort.SliceStable(sources, func(i, j int) bool {
		ri, rj := rank(sources[i]), rank(sources[j])
		if ri != rj {
			return ri < rj
		}
		return sources[i].Region < sources[j].Region
	})
}

// GrantInput asks for a grant to pull a version.
type GrantInput struct {
	Version string
	// Audience is the region that pulls.
	Audience string
	// Server is the region pulled from: the grant opens its store only.
	Server string
}

// GrantResult carries the grant. It is short-lived: it expires before it is of use to anyone
// reading workflow histories later.
type GrantResult struct{ Token string }

// MintGrant mints a grant for the target region (Audience) to pull the version from the
// serving region's store (Server), signed with central's key.
func (c *Central) MintGrant(ctx context.Context, in GrantInput) (GrantResult, error) {
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return GrantResult{}, ErrBadVersion.New(err.Error(), err)
	}
	if err := state.ValidateRegionID(in.Server); err != nil {
		return GrantResult{}, ErrBadRegion.New("serving region: "+err.Error(), err)
	}
	if c.Key == nil {
		return GrantResult{}, errNoKey("mint grants")
	}
	ttl := c.GrantTTL
	if ttl == 0 {
		ttl = 15 * time.Minute
	}
	g := signing.Grant{Version: id, Audience: in.Audience, Server: in.Server, Expires: time.Now().Add(ttl)}
	return GrantResult{Token: c.Key.MintGrant(g)}, nil
}

// RecordInput says a region now holds a verified copy.
type RecordInput struct {
	Version string
	Region  string
}

// RecordLocation records a verified copy in the catalog.
func (c *Central) RecordLocation(ctx context.Context, in RecordInput) error {
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return ErrBadVersion.New(err.Error(), err)
	}
	return c.Catalog.SetVerified(ctx, id, in.Region)
}

// Region holds a region worker's activities.
type Region struct {
	ID    string
	Store *store.Store
	// Relay is central's relay storage as this region reaches it; nil if it has none.
	Relay *store.Store
	HTTP  *http.Client
	// CentralKey is central's public key: the region deploys only versions it signed.
	CentralKey signing.PublicKey
	// Inventory is the region's terminals, groups, boot actions and tasks.
	Inventory *state.Inventory
	// Agents reaches the terminals' agents; nil if none can be reached.
	Agents Commander
	// Waker wakes terminals that are off (Wake-on-LAN); nil if the region has no boot service.
	Waker Waker
	// Siblings passes power commands to agents that poll another of the region's servers; nil
	// when the region has one server.
	Siblings Siblings
	// Mailbox tells when terminals' agents polled and which commands they took; nil if no
	// agent can be reached.
	Mailbox Mailbox
	// Segment is the terminals' boot segment (region.boot.subnet): a power-on of a terminal
	// last seen outside it is refused. The zero prefix means unknown: nothing is refused.
	Segment netip.Prefix
	// WakeTimeout is how long a power-on waits for a woken terminal (0: DefaultWakeTimeout);
	// Settings' value wins when Settings is set.
	WakeTimeout time.Duration
	// Settings are the region's run-time settings, which central may change while it runs;
	// nil: none (ApplySetting refuses).
	Settings LiveSettings
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Version is the tms release the region's server runs, for its status reports.
	Version string
	// ReportInterval is how often the region reports its status to central (see
	// workflows.RegionService); it travels in the report so central knows when one is missed.
	ReportInterval time.Duration
	// ServerStaleAfter is how long after its last heartbeat one of the region's servers counts
	// as stale in the status reports (state.StaleAfter of region.heartbeat; 0: the default's).
	ServerStaleAfter time.Duration
	// Usage returns the bytes the region's store uses and may hold; nil: unknown.
	Usage func(context.Context) (used, capacity int64, err error)
	// Metrics counts the bytes and chunks the region's transfers move; nil counts nothing.
	Metrics *metrics.Region
	// StoreCapacity is region.store_capacity in bytes: the store's capacity is the smaller of
	// it and its filesystem's size (0: the filesystem's).
	StoreCapacity int64
	// Log receives what eviction removes and why (nil: nothing).
	Log *slog.Logger
	// Arrivals, if set, is where copies into the region's store announce the version they
	// bring, for deploys that start while it arrives (arriving.go); the region's agent API
	// serves from the same registry. Nil: a version is usable once it is here.
	Arrivals *arrival.Registry
	// WAN paces the region's WAN transfers, all of them together (its wan_rate and
	// wan_rate_windows); nil: no cap but the transfers' own.
	WAN WANLimiter
	// BootEnvs materializes the versions of the in-memory OS this server serves; nil: it
	// serves none (rollouts to the region fail, saying so).
	BootEnvs BootEnvServer

	describe describeCache
}

// WANLimiter is the region's pace of its WAN transfers, shared by all of them
// (*wanrate.Bucket).
type WANLimiter interface {
	wanrate.Limiter
	// Rate is the cap in force, in bytes a second (0: none).
	Rate() int64
}

var _ WANLimiter = (*wanrate.Bucket)(nil)

// wanLimit is the limiter of one transfer with its own cap rate (0: none) under the region's,
// and the cap in force now (0: none).
func (r *Region) wanLimit(rate int64) (wanrate.Limiter, int64, error) {
	if rate != 0 && (rate < settings.MinRate || rate > settings.MaxRate) {
		return nil, 0, ErrBadInput.New(fmt.Sprintf("a transfer's rate of %d bytes a second: it is 0 (only the regions' caps) or %s to %s",
			rate, settings.FormatRate(settings.MinRate), settings.FormatRate(settings.MaxRate)), nil)
	}
	var own wanrate.Limiter
	if rate > 0 {
		own = wanrate.NewBucket(rate, nil)
	}
	var region wanrate.Limiter
	now := rate
	if r.WAN != nil {
		region = r.WAN
		if c := r.WAN.Rate(); c > 0 && (now == 0 || c < now) {
			now = c
		}
	}
	return wanrate.All(own, region), now, nil
}

// PullInput asks a region to pull a version from a peer.
type PullInput struct {
	Version  string
	Endpoint string
	Grant    string
	// Rate caps this pull, in bytes a second, under the region's own WAN cap (0: only the
	// regions' caps: the puller's and the serving region's).
	Rate int64
}

// MoveResult says what a transfer moved.
type MoveResult struct {
	Chunks     int64
	Moved      int64
	MovedBytes int64
}

// PullFromPeer copies the version from a peer region's data endpoint into this region's store,
// checking every chunk; it heartbeats its position and, retried after a crash, moves only what
// is still missing.
func (r *Region) PullFromPeer(ctx context.Context, in PullInput) (MoveResult, error) {
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return MoveResult{}, ErrBadVersion.New(err.Error(), err)
	}
	base, err := url.Parse(in.Endpoint)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return MoveResult{}, ErrBadEndpoint.New(fmt.Sprintf("bad peer endpoint %q", in.Endpoint), err)
	}
	lim, capNow, err := r.wanLimit(in.Rate)
	if err != nil {
		return MoveResult{}, err
	}
	src := r.siblingsFirst(&transfer.HTTPSource{Base: base, Version: id, Grant: in.Grant, Client: r.HTTP, Limit: lim}, id)
	if err := r.preflight(ctx, src, id); err != nil {
		return MoveResult{}, err
	}
	return r.copy(ctx, src, r.Store, id, r.Metrics.Flow(metrics.PathPeer, metrics.In), transfer.Options{Rate: capNow})
}

// siblingsFirst puts the region's other servers before a share's source of version id: what a
// sibling holds does not cross the WAN.
func (r *Region) siblingsFirst(src transfer.Source, id manifest.ID) transfer.Source {
	if r.Siblings == nil {
		return src
	}
	return r.Siblings.First(src, id)
}

// RelayInput names a version to move through central's relay storage.
type RelayInput struct {
	Version string
	// Rate caps this side of the relay, in bytes a second, under the region's own WAN cap
	// (0: only the region's cap). Both the pushing and the pulling region apply it.
	Rate int64
}

// PushToRelay uploads the version from this region's store to the relay storage: the manifest
// to the staging area first, so a puller can start at once, then the chunks the relay lacks.
// The version is held in this region's store while it is read (see store.Hold).
func (r *Region) PushToRelay(ctx context.Context, in RelayInput) (MoveResult, error) {
	id, v, err := r.relayVersion(ctx, in.Version, r.Store)
	if err != nil {
		return MoveResult{}, err
	}
	lim, capNow, err := r.wanLimit(in.Rate)
	if err != nil {
		return MoveResult{}, err
	}
	pace := &wanrate.Objects{Limit: lim}
	keep, err := r.Store.Keep(ctx, id, holderFor(ctx, "relay/"+r.ID+"/"+id.Short()), RelayHoldTTL)
	if errors.Is(err, store.ErrNotFound) {
		return MoveResult{}, ErrNotHere.New("region "+r.ID+" does not hold version "+id.Short(), err)
	}
	if err != nil {
		return MoveResult{}, err
	}
	defer keep.Stop()
	// The signature first: the puller reads it once it has the staged manifest.
	if err := transfer.CopySignature(ctx, transfer.StoreSource{S: r.Store}, r.Relay, id); err != nil {
		return MoveResult{}, err
	}
	// The stats before the manifest: the puller checks its room with them (none: its estimate).
	if st, err := r.Store.GetStats(ctx, id); err == nil {
		if err := transfer.StageStats(ctx, r.Relay, id, st); err != nil {
			return MoveResult{}, err
		}
		defer r.Relay.Backend().Delete(context.WithoutCancel(ctx), transfer.StagingStatsKey(id))
	}
	if err := transfer.Stage(ctx, r.Relay, v, pace); err != nil {
		return MoveResult{}, err
	}
	res, err := r.copy(ctx, transfer.StoreSource{S: r.Store}, r.Relay, id, r.Metrics.Flow(metrics.PathRelay, metrics.Out),
		transfer.Options{Pace: pace, Rate: capNow})
	if err != nil {
		return res, err
	}
	return res, r.Relay.Backend().Delete(ctx, transfer.StagingKey(id))
}

// PullFromRelay copies the version from the relay storage into this region's store, waiting
// for chunks that the source region is still uploading.
func (r *Region) PullFromRelay(ctx context.Context, in RelayInput) (MoveResult, error) {
	id, err := manifest.ParseID(in.Version)
	if err != nil {
		return MoveResult{}, ErrBadVersion.New(err.Error(), err)
	}
	if r.Relay == nil {
		return MoveResult{}, ErrNoRelay.New("region "+r.ID+" has no relay storage configured", nil)
	}
	lim, capNow, err := r.wanLimit(in.Rate)
	if err != nil {
		return MoveResult{}, err
	}
	src := transfer.WaitingSource{S: r.Relay}
	if lim != nil {
		src.Pace = &wanrate.Objects{Limit: lim}
	}
	from := r.siblingsFirst(src, id)
	if err := r.preflight(ctx, from, id); err != nil {
		return MoveResult{}, err
	}
	return r.copy(ctx, from, r.Store, id, r.Metrics.Flow(metrics.PathRelay, metrics.In), transfer.Options{Rate: capNow})
}

func (r *Region) relayVersion(ctx context.Context, version string, from *store.Store) (manifest.ID, *store.Version, error) {
	if r.Relay == nil {
		if _, err := manifest.ParseID(version); err != nil {
			return manifest.ID{}, nil, ErrBadVersion.New(err.Error(), err)
		}
		return manifest.ID{}, nil, ErrNoRelay.New("region "+r.ID+" has no relay storage configured", nil)
	}
	return r.heldVersion(ctx, version, from)
}

// heldVersion parses version and reads it from s, one of the region's stores: a malformed id
// and a version the store does not hold are errors no retry mends.
func (r *Region) heldVersion(ctx context.Context, version string, s *store.Store) (manifest.ID, *store.Version, error) {
	id, err := manifest.ParseID(version)
	if err != nil {
		return id, nil, ErrBadVersion.New(err.Error(), err)
	}
	v, err := s.GetManifest(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return id, nil, ErrNotHere.New("region "+r.ID+" does not hold version "+id.Short(), err)
	}
	return id, v, err
}

// StoreSignatureInput is central's signature of a version the region holds.
type StoreSignatureInput struct {
	Version   string
	Signature signing.Signature
}

// StoreSignature keeps central's signature of a version beside it in the region's store (after
// a capture, which central signs when it registers the version). The signature is checked with
// the region's copy of central's public key first, so a region configured with another
// central's key says so here rather than at the first deploy.
func (r *Region) StoreSignature(ctx context.Context, in StoreSignatureInput) error {
	id, v, err := r.heldVersion(ctx, in.Version, r.Store)
	if err != nil {
		return err
	}
	if err := r.CentralKey.VerifyManifest(id, v.Encoded, in.Signature); err != nil {
		return ErrBadSignature.New(fmt.Sprintf("region %s (central key %s): %v", r.ID, r.CentralKey.ID(), err), err)
	}
	return r.Store.PutSignature(ctx, id, in.Signature)
}

// checkSigned refuses a version the region holds unless central signed it.
func (r *Region) checkSigned(ctx context.Context, v *store.Version) error {
	sig, err := r.Store.GetSignature(ctx, v.ID)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnsigned.New(fmt.Sprintf("version %s of %s is not signed by central: region %s deploys only versions central signed when it registered them (a capture, or a copy of one)",
			v.ID.Short(), v.Manifest.Meta.Name, r.ID), err)
	}
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		return err
	}
	if err == nil {
		err = r.CentralKey.VerifyManifest(v.ID, v.Encoded, sig)
	}
	if err != nil {
		return ErrBadSignature.New(fmt.Sprintf("version %s of %s has no valid signature by central's key %s: %v", v.ID.Short(), v.Manifest.Meta.Name, r.CentralKey.ID(), err), err)
	}
	return nil
}

// pacedHeartbeat is how often a transfer heartbeats its position while its chunks move.
const pacedHeartbeat = 20 * time.Second

// copy runs a transfer with heartbeats and turns data errors into non-retryable ones; opts
// carries its pacing.
func (r *Region) copy(ctx context.Context, src transfer.Source, dst *store.Store, id manifest.ID, meter transfer.Meter, opts transfer.Options) (MoveResult, error) {
	opts.Meter = meter
	var last atomic.Pointer[transfer.Progress]
	last.Store(&transfer.Progress{})
	opts.Progress = func(p transfer.Progress) {
		last.Store(&p)
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, p)
		}
	}
	if activity.IsActivity(ctx) {
		// Under a WAN cap, many chunks share the pace and each may take minutes; the copy's
		// position goes on being reported while they move. Without a cap, only chunks that
		// arrive report, so a transfer that stalls is taken for lost after the heartbeat
		// timeout, as ever.
		paced := func() bool { return opts.Rate > 0 || r.WAN != nil && r.WAN.Rate() > 0 }
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(pacedHeartbeat)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if paced() {
						activity.RecordHeartbeat(ctx, *last.Load())
					}
				}
			}
		}()
	}
	var res *transfer.Result
	var err error
	if dst == r.Store {
		res, err = r.copyHere(ctx, src, id, opts)
	} else {
		res, err = transfer.Copy(ctx, src, dst, id, opts)
	}
	if err != nil {
		if errors.Is(err, transfer.ErrSourceCorrupt) || errors.Is(err, manifest.ErrInvalid) {
			// Retrying the same source gives the same bytes; the workflow tries another path.
			return MoveResult{}, ErrSourceCorrupt.New(err.Error(), err)
		}
		return MoveResult{}, err
	}
	return MoveResult{Chunks: res.Chunks, Moved: res.Moved, MovedBytes: res.MovedBytes}, nil
}
