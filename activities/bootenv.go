package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"tms/bootenv"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

// BootEnvServer makes versions of the in-memory OS ready to serve on this server
// (*bootenv.Versions): its boot service serves what it materialized.
type BootEnvServer interface {
	Materialize(ctx context.Context, version string) (bootenv.Served, error)
}

var _ BootEnvServer = (*bootenv.Versions)(nil)

// BootEnvInput names a version of the in-memory OS.
type BootEnvInput struct{ Version string }

// BootEnvResult describes a materialized version.
type BootEnvResult struct {
	Version       string
	Name          string
	KernelVersion string
	AgentVersion  string
}

// MaterializeBootEnv makes a version of the in-memory OS ready to serve on this server: from
// its store, only if central signed it, every chunk checked (package bootenv). A version whose
// signature does not verify is refused and never served.
func (r *Region) MaterializeBootEnv(ctx context.Context, in BootEnvInput) (BootEnvResult, error) {
	s, err := r.materialize(ctx, in.Version)
	if err != nil {
		return BootEnvResult{}, err
	}
	return BootEnvResult{Version: s.Version, Name: s.Info.Name, KernelVersion: s.Info.KernelVersion, AgentVersion: s.Info.AgentVersion}, nil
}

func (r *Region) materialize(ctx context.Context, version string) (bootenv.Served, error) {
	id, err := manifest.ParseID(version)
	if err != nil {
		return bootenv.Served{}, ErrBadVersion.New(fmt.Sprintf("bootenv version %.80q: %v", version, err), err)
	}
	if r.BootEnvs == nil {
		return bootenv.Served{}, ErrBadInput.New(fmt.Sprintf("region %s serves no published bootenv versions on this server", r.ID), nil)
	}
	s, err := r.BootEnvs.Materialize(ctx, id.String())
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, bootenv.ErrUnsigned):
		return s, ErrBadSignature.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
	case errors.Is(err, bootenv.ErrNotBootEnv), errors.Is(err, bootenv.ErrBadBundle):
		return s, ErrBadImage.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
	case errors.Is(err, store.ErrNotFound):
		return s, ErrNotHere.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
	case errors.Is(err, store.ErrCorrupt):
		return s, ErrSourceCorrupt.New(fmt.Sprintf("region %s: %v", r.ID, err), err)
	}
	return s, err
}

// SetBootEnvInput makes a version the region's current in-memory OS.
type SetBootEnvInput struct {
	Version string
	By      string // who or which rollout set it
	Task    string
	At      time.Time
}

// SetBootEnv makes a version the region's current in-memory OS: terminals without a probe of
// their own boot it from now on. It is kept in the region's inventory (shared by every server of
// the region), and this server materializes it first, so a version it cannot serve is refused
// before any terminal is sent to it. The other servers of the region materialize it when a
// terminal first asks them.
func (r *Region) SetBootEnv(ctx context.Context, in SetBootEnvInput) error {
	s, err := r.materialize(ctx, in.Version)
	if err != nil {
		return err
	}
	at := in.At
	if at.IsZero() {
		at = r.now()
	}
	prev, err := r.CurrentBootEnv(ctx)
	if err != nil {
		return err
	}
	// Eviction keeps the region's current in-memory OS: the servers of the region that have
	// not unpacked it yet need it in their store.
	id, _ := manifest.ParseID(s.Version)
	if err := r.Store.Pin(ctx, id, bootEnvPinner); err != nil {
		return fmt.Errorf("pin bootenv %s: %w", id.Short(), err)
	}
	if err := r.Inventory.SetSetting(ctx, state.Setting{Key: state.SettingBootEnv, Value: s.Version, SetAt: at, SetBy: in.By, Task: in.Task}); err != nil {
		return err
	}
	if prev.Version != "" && prev.Version != s.Version {
		// The previous version's pin goes if a rollout made it (an admin's stays).
		if pid, err := manifest.ParseID(prev.Version); err == nil {
			if h, err := r.Store.GetPin(ctx, pid); err == nil && h.By == bootEnvPinner {
				if _, err := r.Store.Unpin(ctx, pid); err != nil {
					r.logger(ctx).Warn("the previous bootenv stays pinned", "version", pid.Short(), "err", err)
				}
			}
		}
	}
	return nil
}

// bootEnvPinner pins the region's current in-memory OS in its store.
const bootEnvPinner = "bootenv: the region's current in-memory OS"

// CurrentBootEnvResult is the region's current in-memory OS; Version is empty when it has
// none (its terminals boot the plain boot directory).
type CurrentBootEnvResult struct {
	Version string
	SetAt   time.Time
	SetBy   string
}

// CurrentBootEnv returns the region's current in-memory OS.
func (r *Region) CurrentBootEnv(ctx context.Context) (CurrentBootEnvResult, error) {
	s, err := r.Inventory.CurrentBootEnv(ctx)
	return CurrentBootEnvResult{Version: s.Value, SetAt: s.SetAt, SetBy: s.SetBy}, err
}

// CanaryInput asks for the terminal a rollout tries a new in-memory OS on.
type CanaryInput struct {
	// Terminal is the one the admin named for this region (name or MAC): it must do.
	Terminal string `json:",omitempty"`
	// Candidates are terminals the admin named without a region: the first this region has
	// is its canary; none: the region picks one.
	Candidates []string `json:",omitempty"`
}

// PickCanary picks the terminal a rollout tries a new in-memory OS on: the one named, else an
// enrolled terminal with no task under way, the one seen most recently (most likely on and
// reachable). A region with none is ErrNoCanary, with the reason.
func (r *Region) PickCanary(ctx context.Context, in CanaryInput) (TerminalRef, error) {
	now := r.now()
	if in.Terminal != "" {
		t, err := r.terminal(ctx, in.Terminal)
		var ae *temporal.ApplicationError
		if errors.As(err, &ae) {
			return TerminalRef{}, ErrNoCanary.New(fmt.Sprintf("canary: %s", ae.Message()), err)
		}
		if err != nil {
			return TerminalRef{}, err
		}
		busy, err := r.Inventory.TaskUnderWay(ctx, t.MAC, now)
		if err != nil {
			return TerminalRef{}, err
		}
		if busy != nil {
			return TerminalRef{}, ErrNoCanary.New(fmt.Sprintf("canary %s of region %s: %v", in.Terminal, r.ID, busy), busy)
		}
		return TerminalRef{MAC: t.MAC, Name: t.Name, DiskSize: t.DiskSize}, nil
	}
	for _, c := range in.Candidates {
		t, err := r.Inventory.Terminal(ctx, c)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return TerminalRef{}, err
		}
		return r.PickCanary(ctx, CanaryInput{Terminal: t.MAC})
	}
	ts, err := r.Inventory.Terminals(ctx)
	if err != nil {
		return TerminalRef{}, err
	}
	ts = slices.DeleteFunc(ts, func(t state.Terminal) bool { return !t.Enrolled })
	if len(ts) == 0 {
		return TerminalRef{}, ErrNoCanary.New(fmt.Sprintf("region %s has no enrolled terminal to try the new in-memory OS on", r.ID), nil)
	}
	slices.SortStableFunc(ts, func(a, b state.Terminal) int { return b.LastSeen.Compare(a.LastSeen) })
	for _, t := range ts {
		busy, err := r.Inventory.TaskUnderWay(ctx, t.MAC, now)
		if err != nil {
			return TerminalRef{}, err
		}
		if busy == nil {
			return TerminalRef{MAC: t.MAC, Name: t.Name, DiskSize: t.DiskSize}, nil
		}
	}
	return TerminalRef{}, ErrNoCanary.New(fmt.Sprintf("every enrolled terminal of region %s (%d) has a task under way: name a canary with --canary or wait", r.ID, len(ts)), nil)
}

// BootEnvCatalog is where central records the published versions of the in-memory OS
// (state.Catalog through StateCatalog).
type BootEnvCatalog interface {
	RecordBootEnv(ctx context.Context, b state.BootEnv) error
	BootEnvs(ctx context.Context) ([]state.BootEnv, error)
}

var _ BootEnvCatalog = StateCatalog{}

func (s StateCatalog) RecordBootEnv(ctx context.Context, b state.BootEnv) error {
	return s.C.RecordBootEnv(ctx, b)
}

func (s StateCatalog) BootEnvs(ctx context.Context) ([]state.BootEnv, error) {
	return s.C.BootEnvs(ctx)
}

func (c *Central) bootEnvCatalog() (BootEnvCatalog, error) {
	if b, ok := c.Catalog.(BootEnvCatalog); ok {
		return b, nil
	}
	return nil, errors.New("central's catalog keeps no bootenv versions")
}

// RegisterBootEnvInput records a version of the in-memory OS published in a region's store.
type RegisterBootEnvInput struct {
	Info          VersionInfo // its image is bootenv.NAME
	Region        string      // holds a verified copy
	KernelVersion string
	AgentVersion  string
	By            string
}

// RegisterBootEnv records a published version of the in-memory OS in central's catalog as it
// records an image version (central signs it; the region's copy is verified; the tag latest of
// bootenv.NAME points at it) and what it is: name, kernel, agent, who published it when.
func (c *Central) RegisterBootEnv(ctx context.Context, in RegisterBootEnvInput) (RegisterVersionResult, error) {
	if !manifest.IsBootEnv(in.Info.Name) {
		return RegisterVersionResult{}, ErrBadImage.New(fmt.Sprintf("image %s is not in the bootenv name space %s", in.Info.Name, manifest.BootEnvPrefix), nil)
	}
	cat, err := c.bootEnvCatalog()
	if err != nil {
		return RegisterVersionResult{}, err
	}
	res, err := c.RegisterVersion(ctx, RegisterVersionInput{Info: in.Info, Tag: manifest.DefaultTag, Region: in.Region})
	if err != nil {
		return res, err
	}
	err = cat.RecordBootEnv(ctx, state.BootEnv{Version: in.Info.Version, Name: in.Info.Name[len(manifest.BootEnvPrefix):],
		KernelVersion: in.KernelVersion, AgentVersion: in.AgentVersion, Published: in.Info.Created, PublishedBy: in.By})
	if err != nil {
		return res, ErrBadInput.New(err.Error(), err)
	}
	return res, nil
}

// RegionBootEnvInput records the in-memory OS a region runs.
type RegionBootEnvInput struct {
	Region  string
	Version string
	By      string
	Task    string
	At      time.Time
}

// RecordRegionBootEnv records in central's catalog the in-memory OS a region now runs (beside
// the run-time settings the region applied), for tms status and tms bootenv ls.
func (c *Central) RecordRegionBootEnv(ctx context.Context, in RegionBootEnvInput) error {
	st, err := c.settingsStore()
	if err != nil {
		return err
	}
	err = st.SetRegionSetting(ctx, in.Region, state.Setting{Key: state.SettingBootEnv, Value: in.Version, SetAt: in.At, SetBy: in.By, Task: in.Task}, false)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknownRegion.New(fmt.Sprintf("central has no region %s", in.Region), err)
	}
	return err
}

// BootEnvInfo is a published version of the in-memory OS as central knows it.
type BootEnvInfo struct {
	Version       string
	Name          string
	KernelVersion string
	AgentVersion  string
	Published     time.Time
	PublishedBy   string
	Regions       []string // regions holding a verified copy
	Running       []string // regions whose current in-memory OS it is
}

// ListBootEnvsResult lists the published versions, newest first.
type ListBootEnvsResult struct{ BootEnvs []BootEnvInfo }

// ListBootEnvs lists the published versions of the in-memory OS: where copies are and which
// regions run them.
func (c *Central) ListBootEnvs(ctx context.Context) (ListBootEnvsResult, error) {
	cat, err := c.bootEnvCatalog()
	if err != nil {
		return ListBootEnvsResult{}, err
	}
	bs, err := cat.BootEnvs(ctx)
	if err != nil {
		return ListBootEnvsResult{}, err
	}
	imgs, err := c.Catalog.Images(ctx)
	if err != nil {
		return ListBootEnvsResult{}, err
	}
	where := map[string][]string{}
	for _, im := range imgs {
		where[im.Version] = im.Regions
	}
	running, err := c.regionBootEnvs(ctx)
	if err != nil {
		return ListBootEnvsResult{}, err
	}
	var res ListBootEnvsResult
	for _, b := range bs {
		info := BootEnvInfo{Version: b.Version, Name: b.Name, KernelVersion: b.KernelVersion, AgentVersion: b.AgentVersion,
			Published: b.Published, PublishedBy: b.PublishedBy, Regions: where[b.Version]}
		for _, rb := range running {
			if rb.Version == b.Version {
				info.Running = append(info.Running, rb.Region)
			}
		}
		res.BootEnvs = append(res.BootEnvs, info)
	}
	return res, nil
}

// RegionBootEnv is the in-memory OS a region runs, as central recorded it.
type RegionBootEnv struct {
	Region  string
	Version string
	SetAt   time.Time
}

// regionBootEnvs lists the regions' current in-memory OS, by region id; a region that never
// had one is left out.
func (c *Central) regionBootEnvs(ctx context.Context) ([]RegionBootEnv, error) {
	st, err := c.settingsStore()
	if err != nil {
		return nil, err
	}
	regions, err := c.Catalog.Regions(ctx)
	if err != nil {
		return nil, err
	}
	var out []RegionBootEnv
	for _, r := range regions {
		ss, err := st.RegionSettings(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if s.Key == state.SettingBootEnv {
				out = append(out, RegionBootEnv{Region: r.ID, Version: s.Value, SetAt: s.SetAt})
			}
		}
	}
	slices.SortFunc(out, func(a, b RegionBootEnv) int { return strings.Compare(a.Region, b.Region) })
	return out, nil
}

// ResolveBootEnv finds the published version of the in-memory OS that in.Version names: the
// whole id or a unique prefix of at least manifest.MinVersionPrefix hex digits.
func (c *Central) ResolveBootEnv(ctx context.Context, in BootEnvInput) (BootEnvInfo, error) {
	v := in.Version
	if len(v) < manifest.MinVersionPrefix || len(v) > 2*manifest.IDLen || strings.Trim(v, "0123456789abcdef") != "" {
		return BootEnvInfo{}, ErrBadVersion.New(fmt.Sprintf("bootenv version %.80q: want %d to %d lowercase hex digits", v, manifest.MinVersionPrefix, 2*manifest.IDLen), nil)
	}
	list, err := c.ListBootEnvs(ctx)
	if err != nil {
		return BootEnvInfo{}, err
	}
	var found []BootEnvInfo
	for _, b := range list.BootEnvs {
		if strings.HasPrefix(b.Version, v) {
			found = append(found, b)
		}
	}
	switch len(found) {
	case 0:
		return BootEnvInfo{}, ErrUnknownImage.New(fmt.Sprintf("central has no published bootenv version %s (tms bootenv ls lists them)", v), nil)
	case 1:
		return found[0], nil
	}
	return BootEnvInfo{}, ErrBadVersion.New(fmt.Sprintf("bootenv version %s is ambiguous: %d versions start with it", v, len(found)), nil)
}
