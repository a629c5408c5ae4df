// Package scale measures tms at district scale: hundreds of regions of 60 terminals each, on the
// real Temporal server with the real central worker, the regions simulated as lightweight
// Temporal workers in one process that run the real region workflows with simulated
// activities. Run it with scripts/bench scale (sizes in TMS_SCALE_SIZES, default 10,100,1000).
//
// What the simulation replaces (SimRegion) is every activity of a region that would move image
// data or talk to a PC, and the region's inventory and store bookkeeping, which it keeps in
// memory: see docs/performance.md, "District scale".
package scale

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"tms/activities"
	"tms/internal/ctxtime"
)

// TerminalsPerRegion is the classroom size of every simulated region.
const TerminalsPerRegion = 60

// Counters count the simulated regions' activities, by name, across all regions.
type Counters struct {
	mu     sync.Mutex
	counts map[string]int64
	total  atomic.Int64
}

func (c *Counters) add(name string) {
	c.total.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int64{}
	}
	c.counts[name]++
}

// Total is the number of region activities run.
func (c *Counters) Total() int64 { return c.total.Load() }

// Get is the number of runs of activity name.
func (c *Counters) Get(name string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[name]
}

// Snapshot returns the counts by activity name.
func (c *Counters) Snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// SimRegion is one simulated region's activities, registered under the names of
// activities.Region's methods, so the real workflows run against it unchanged. It holds its
// store's versions and holds in memory; it moves no bytes and reaches no PC:
//
//   - PullFromPeer, PullFromRelay: record the version as present (every chunk "verified")
//     after Delay, and report StoredBytes moved; PushToRelay: returns after Delay.
//   - AwaitVersion: returns once the version is present (polling, heartbeating).
//   - ResolveTerminals: the group's 60 terminals (pc01..pc60, MACs derived from the region).
//   - PrepareTask, PowerTerminal, FinishTask: succeed at once, as a terminal that reboots.
//   - WaitForAgent: returns after a random 0..AgentDelay as an agent that wrote the version
//     (Verified, written and skipped chunk counts of a 32 GiB disk).
//   - Status: a summary with the versions held, 60 terminals online, a 2 TB store.
//   - MakeRoom, HoldVersion, ReleaseHolds, EvictIfFull, StoreSignature, DescribeVersion, Admin:
//     bookkeeping only (holds recorded, nothing to evict).
type SimRegion struct {
	ID string
	// Delay is how long a pull takes; AgentDelay bounds a terminal's simulated deploy.
	Delay, AgentDelay time.Duration
	// StoredBytes is what a pull reports moved.
	StoredBytes int64
	// ReportInterval is how often the region reports, as its status says.
	ReportInterval time.Duration
	Count          *Counters
	// FirstDeploy is set (UnixNano) when the region's first deploy activity runs
	// (ResolveTerminals).
	FirstDeploy atomic.Int64
	// FirstPlan is set (UnixNano) when the plan's first activity runs in the region (MakeRoom).
	FirstPlan atomic.Int64

	mu       sync.Mutex
	versions []string // present, in the order they arrived
	holds    map[string]string
}

// NewSimRegion returns region id's simulation, holding versions.
func NewSimRegion(id string, count *Counters, versions ...string) *SimRegion {
	return &SimRegion{ID: id, Count: count, versions: versions, holds: map[string]string{},
		Delay: 100 * time.Millisecond, AgentDelay: 2 * time.Second, StoredBytes: 8 << 30}
}

// Holds tells whether region s holds version (a function, not a method: every exported
// method of SimRegion is registered as an activity).
func Holds(s *SimRegion, version string) bool { return s.has(version) }

func (s *SimRegion) has(version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.versions, version)
}

func (s *SimRegion) arrive(version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.versions, version) {
		s.versions = append(s.versions, version)
	}
}

func sleep(ctx context.Context, d time.Duration) error { return ctxtime.Sleep(ctx, d) }

func (s *SimRegion) Status(ctx context.Context, _ activities.StatusInput) (activities.RegionStatus, error) {
	s.Count.add("Status")
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := activities.RegionSummary{Region: s.ID, Version: "bench", Capacity: 2 << 40, HighWater: 0.9, LowWater: 0.8,
		ImagesListed: true, ImageCount: len(s.versions), Terminals: TerminalsPerRegion, Online: TerminalsPerRegion, At: time.Now(),
		Interval: s.ReportInterval}
	for _, v := range s.versions {
		sum.Used += s.StoredBytes
		sum.Images = append(sum.Images, activities.ImageDescriptor{Name: "exam", Version: v, StoredBytes: s.StoredBytes})
	}
	return activities.RegionStatus{Summary: sum}, nil
}

func (s *SimRegion) Admin(ctx context.Context, in activities.AdminInput) (activities.AdminResult, error) {
	s.Count.add("Admin")
	return activities.AdminResult{}, nil
}

func (s *SimRegion) EvictIfFull(ctx context.Context, _ activities.EvictInput) (activities.MakeRoomResult, error) {
	s.Count.add("EvictIfFull")
	return activities.MakeRoomResult{}, nil
}

func (s *SimRegion) MakeRoom(ctx context.Context, in activities.MakeRoomInput) (activities.MakeRoomResult, error) {
	s.Count.add("MakeRoom")
	s.FirstPlan.CompareAndSwap(0, time.Now().UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.Holder != "" {
		s.holds[in.Holder] = in.Version
	}
	return activities.MakeRoomResult{Capacity: 2 << 40}, nil
}

func (s *SimRegion) HoldVersion(ctx context.Context, in activities.HoldInput) error {
	s.Count.add("HoldVersion")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds[in.Holder] = in.Version
	return nil
}

func (s *SimRegion) ReleaseHolds(ctx context.Context, in activities.ReleaseInput) error {
	s.Count.add("ReleaseHolds")
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.holds, in.Holder)
	return nil
}

func (s *SimRegion) StoreSignature(ctx context.Context, in activities.StoreSignatureInput) error {
	s.Count.add("StoreSignature")
	return nil
}

func (s *SimRegion) DescribeVersion(ctx context.Context, in activities.VersionInput) (activities.VersionInfo, error) {
	s.Count.add("DescribeVersion")
	if !s.has(in.Version) {
		return activities.VersionInfo{}, activities.ErrNotHere.New("version "+in.Version+" is not in region "+s.ID, nil)
	}
	return activities.VersionInfo{Version: in.Version, Name: "exam", StoredBytes: s.StoredBytes}, nil
}

func (s *SimRegion) PullFromPeer(ctx context.Context, in activities.PullInput) (activities.MoveResult, error) {
	s.Count.add("PullFromPeer")
	return s.pull(ctx, in.Version)
}

func (s *SimRegion) PullFromRelay(ctx context.Context, in activities.RelayInput) (activities.MoveResult, error) {
	s.Count.add("PullFromRelay")
	return s.pull(ctx, in.Version)
}

func (s *SimRegion) PushToRelay(ctx context.Context, in activities.RelayInput) (activities.MoveResult, error) {
	s.Count.add("PushToRelay")
	return activities.MoveResult{}, sleep(ctx, s.Delay)
}

func (s *SimRegion) pull(ctx context.Context, version string) (activities.MoveResult, error) {
	if err := sleep(ctx, s.Delay); err != nil {
		return activities.MoveResult{}, err
	}
	s.arrive(version)
	chunks := s.StoredBytes / (4 << 20)
	return activities.MoveResult{Chunks: chunks, Moved: chunks, MovedBytes: s.StoredBytes}, nil
}

func (s *SimRegion) AwaitVersion(ctx context.Context, in activities.AwaitVersionInput) (activities.AwaitVersionResult, error) {
	s.Count.add("AwaitVersion")
	for !s.has(in.Version) {
		activity.RecordHeartbeat(ctx)
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return activities.AwaitVersionResult{}, err
		}
	}
	return activities.AwaitVersionResult{}, nil
}

func (s *SimRegion) ResolveTerminals(ctx context.Context, in activities.ResolveInput) (activities.ResolveResult, error) {
	s.Count.add("ResolveTerminals")
	s.FirstDeploy.CompareAndSwap(0, time.Now().UnixNano())
	var res activities.ResolveResult
	for i := range TerminalsPerRegion {
		res.Terminals = append(res.Terminals, activities.TerminalRef{Name: fmt.Sprintf("pc%02d", i+1), MAC: s.mac(i), DiskSize: 32 << 30})
	}
	return res, nil
}

// mac is terminal i's MAC: locally administered, unique across regions by the region's hash.
func (s *SimRegion) mac(i int) string {
	var h uint32 = 2166136261
	for _, c := range []byte(s.ID) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", byte(h>>24), byte(h>>16), byte(h>>8), byte(h), byte(i))
}

func (s *SimRegion) PrepareTask(ctx context.Context, in activities.TaskInput) (activities.TerminalRef, error) {
	s.Count.add("PrepareTask")
	return activities.TerminalRef{MAC: in.TerminalRef, DiskSize: 32 << 30}, nil
}

func (s *SimRegion) PowerTerminal(ctx context.Context, in activities.PowerInput) error {
	s.Count.add("PowerTerminal")
	return nil
}

func (s *SimRegion) WaitForAgent(ctx context.Context, in activities.WaitInput) (activities.AgentResult, error) {
	s.Count.add("WaitForAgent")
	if s.AgentDelay > 0 {
		if err := sleep(ctx, rand.N(s.AgentDelay)); err != nil {
			return activities.AgentResult{}, err
		}
	}
	chunks := int64(32<<30) / (4 << 20)
	return activities.AgentResult{Version: "", DiskSize: 32 << 30, Chunks: chunks, Written: chunks / 4,
		WrittenBytes: s.StoredBytes / 4, Skipped: chunks - chunks/4, Verified: true}, nil
}

func (s *SimRegion) FinishTask(ctx context.Context, in activities.FinishInput) error {
	s.Count.add("FinishTask")
	return nil
}
