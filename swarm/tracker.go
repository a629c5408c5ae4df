package swarm

import (
	"crypto/ed25519"
	"hash/maphash"
	"net/netip"
	"slices"
	"sync"
	"time"

	"tms/agentwire"
	"tms/manifest"
)

// Options tune a Tracker; zero fields take the defaults.
type Options struct {
	// PeerUploads is how many chunks one member sends at once (default 3): few, so each
	// chunk a member receives is whole soon and can be passed on.
	PeerUploads int
	// SeedUploads is how many chunks the region sends at once to one swarm as its first seed
	// (default 4), spread over the members so each chunk enters the swarm once.
	SeedUploads int
	// FallbackUploads is how many more the region may send at once to members that found no
	// peer for this long: Starve (default 2 and 3 s). A slow or failed member then does not
	// hold the others back.
	FallbackUploads int
	Starve          time.Duration
	// Lease is how long an assignment keeps its source's upload slot without the fetcher
	// reporting it (default 20 s).
	Lease time.Duration
	// Stale is how long a member may stay silent before it is forgotten (default 30 s).
	Stale time.Duration
	// Linger is how long a member that finished keeps serving its peers (default 20 s).
	Linger time.Duration
	// Avoid is how long a member is not sent again to a peer it could not reach (default 10 s).
	Avoid time.Duration
	// Relief is the share of a version's chunks the region may send again, beyond its one
	// first-seed copy, from seed slots that would stand idle once every chunk is in the swarm:
	// each to a member whose lacking chunks' holders are all busy (default 0.25: the region
	// then sends at most 1.25 × the version's chunks, fallback aside).
	Relief float64
	Now    func() time.Time
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.PeerUploads, 4)
	def(&o.SeedUploads, 4)
	def(&o.FallbackUploads, 2)
	defd(&o.Starve, 3*time.Second)
	defd(&o.Lease, 20*time.Second)
	defd(&o.Stale, 30*time.Second)
	defd(&o.Linger, 20*time.Second)
	defd(&o.Avoid, 10*time.Second)
	if o.Relief <= 0 {
		o.Relief = 0.25
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Tracker keeps a region's swarms, one per version being written, in memory: a region that
// restarts learns them again from the members' next calls, which carry all they hold.
type Tracker struct {
	opts   Options
	seed   maphash.Seed
	mu     sync.Mutex
	swarms map[manifest.ID]*swarmState
}

// NewTracker returns a tracker.
func NewTracker(o Options) *Tracker {
	o.defaults()
	return &Tracker{opts: o, seed: maphash.MakeSeed(), swarms: map[manifest.ID]*swarmState{}}
}

// Member is a terminal as the tracker knows it: its task, and where and with which key it
// serves its peers (the address is the one its calls come from).
type Member struct {
	ID   string
	Addr netip.AddrPort
	Key  ed25519.PublicKey
}

// Result is the tracker's answer to a member's call.
type Result struct {
	Assign []agentwire.SwarmAssignment
	Peers  []agentwire.SwarmPeer
	Retry  time.Duration
	Linger time.Duration
	// Dropped names members that this call made the tracker stop sending anyone to: two
	// members reported bad bytes from them.
	Dropped []string
	// Seeded and Fallback count the assignments from the region: from its seed slots (first
	// sends of a chunk, and Relief of them: sends of a chunk whose holders were all busy), and
	// sends to a member that found no peer for Starve.
	Seeded, Fallback, Relief int
}

type swarmState struct {
	n        int
	holders  []int32 // per chunk: members holding it that are not dropped
	seeding  []int32 // per chunk: region sends under way
	members  map[string]*member
	seeds    int // region sends under way (first seed and relief)
	fallback int // region sends under way (fallback)
	relief   int // relief sends assigned, ever
	lastUsed time.Time
}

type member struct {
	Member
	have     Bitmap
	uploads  int                  // assignments with this member as the source
	pending  map[int]*lease       // what this member is fetching, by chunk
	avoid    map[string]time.Time // peers this member could not reach, until
	excluded map[string]bool      // peers that sent this member bad bytes
	accusers map[string]bool      // members this one sent bad bytes
	told     map[string]string    // peers named to this member's session: id → address and key
	dropped  bool
	last     time.Time // last call
	fed      time.Time // last time it had something to fetch
	done     time.Time // when it finished (zero while it writes)
}

type lease struct {
	chunk    int
	source   string // member, or "" for the region
	fallback bool
	at       time.Time
}

// Poll handles member m's call for version v of n distinct chunks; req was checked with
// req.Check(n). done says the member finished writing and only serves from now on.
func (t *Tracker) Poll(v manifest.ID, n int, m Member, req *agentwire.SwarmRequest, done bool) Result {
	return t.PollHaving(v, n, m, req, done, nil)
}

// PollHaving is Poll for a version the region holds only part of, while it arrives:
// regionHas(i) says whether the region has the i-th distinct chunk to send. The region is
// sent for none it lacks (first seed, relief or fallback); members wait for them, or fetch
// them from a peer that has one. nil: the region has every chunk.
func (t *Tracker) PollHaving(v manifest.ID, n int, m Member, req *agentwire.SwarmRequest, done bool, regionHas func(int) bool) Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.opts.Now()
	t.expire(now)
	s := t.swarms[v]
	if s == nil || s.n != n {
		s = &swarmState{n: n, holders: make([]int32, n), seeding: make([]int32, n), members: map[string]*member{}}
		t.swarms[v] = s
	}
	s.lastUsed = now
	me := s.members[m.ID]
	if me == nil {
		me = &member{have: NewBitmap(n), pending: map[int]*lease{}, avoid: map[string]time.Time{}, told: map[string]string{},
			excluded: map[string]bool{}, accusers: map[string]bool{}, fed: now}
		s.members[m.ID] = me
	}
	me.Member, me.last = m, now
	if req.Fresh {
		clear(me.told)
	}
	var res Result
	s.updateHave(me, Bitmap(req.Have))
	for _, f := range req.Failed {
		s.release(me, f.Chunk)
		if f.Peer == "" || f.Peer == me.ID {
			continue
		}
		if f.Bad {
			me.excluded[f.Peer] = true
			if p := s.members[f.Peer]; p != nil && !p.dropped {
				p.accusers[me.ID] = true
				if len(p.accusers) >= 2 {
					s.drop(p)
					res.Dropped = append(res.Dropped, p.ID)
				}
			}
		} else if p := s.members[f.Peer]; f.Gone && p != nil && !p.done.IsZero() {
			// A member that finished stops serving when its peers stop asking, and its PC
			// goes on to reboot: nobody is sent to it again.
			s.remove(f.Peer)
		} else {
			me.avoid[f.Peer] = now.Add(t.opts.Avoid)
		}
	}
	if done {
		if me.done.IsZero() {
			me.done = now
		}
		res.Linger = t.opts.Linger
		if !s.anyoneLacks(me) {
			res.Linger = 0
		}
		return res
	}
	t.assign(s, me, req.Want, now, regionHas, &res)
	if len(res.Assign) == 0 && me.have.Count() < n {
		res.Retry = 200 * time.Millisecond
	}
	return res
}

// expire forgets silent members, members whose linger is over, leases nobody reported, and
// swarms nobody called for a while. Called with t.mu held.
func (t *Tracker) expire(now time.Time) {
	for v, s := range t.swarms {
		for id, m := range s.members {
			if now.Sub(m.last) > t.opts.Stale || !m.done.IsZero() && now.Sub(m.done) > t.opts.Linger {
				s.remove(id)
			}
		}
		for _, m := range s.members {
			for c, l := range m.pending {
				if now.Sub(l.at) > t.opts.Lease {
					s.release(m, c)
				}
			}
		}
		if len(s.members) == 0 && now.Sub(s.lastUsed) > t.opts.Stale {
			delete(t.swarms, v)
		}
	}
}

// updateHave takes a member's bitmap as the truth: holder counts follow it, and the leases of
// chunks it now holds end.
func (s *swarmState) updateHave(me *member, have Bitmap) {
	for i := range s.n {
		was, is := me.have.Has(i), have.Has(i)
		switch {
		case is && !was:
			if !me.dropped {
				s.holders[i]++
			}
			s.release(me, i)
		case was && !is:
			if !me.dropped {
				s.holders[i]--
			}
		}
	}
	copy(me.have, have)
}

// release ends me's lease on chunk c, if any, freeing its source's slot.
func (s *swarmState) release(me *member, c int) {
	l := me.pending[c]
	if l == nil {
		return
	}
	delete(me.pending, c)
	switch {
	case l.source == "" && l.fallback:
		s.fallback--
	case l.source == "":
		s.seeds--
		s.seeding[c]--
	default:
		if p := s.members[l.source]; p != nil {
			p.uploads--
		}
	}
}

// drop stops the tracker sending anyone to p; p may still fetch.
func (s *swarmState) drop(p *member) {
	p.dropped = true
	for i := range s.n {
		if p.have.Has(i) {
			s.holders[i]--
		}
	}
}

// remove forgets member id, its leases, and the leases others had on it.
func (s *swarmState) remove(id string) {
	m := s.members[id]
	for c := range m.pending {
		s.release(m, c)
	}
	for _, o := range s.members {
		for c, l := range o.pending {
			if l.source == id {
				s.release(o, c)
			}
		}
	}
	if !m.dropped {
		for i := range s.n {
			if m.have.Has(i) {
				s.holders[i]--
			}
		}
	}
	delete(s.members, id)
}

// anyoneLacks reports whether a member other than me still writes and lacks a chunk me holds.
func (s *swarmState) anyoneLacks(me *member) bool {
	for _, o := range s.members {
		if o == me || !o.done.IsZero() {
			continue
		}
		for i, b := range o.have {
			if me.have[i]&^b != 0 {
				return true
			}
		}
	}
	return false
}

// assign gives me up to want chunks. The region's first-seed sends come first, one share of
// them per member, so the region keeps sending chunks nobody holds and each enters the swarm
// once (super-seeding); the rest are the rarest chunks me lacks (fewest holders first, from
// where the member's own walk through the version starts, so members spread over different
// chunks), each from the holder with the fewest uploads under way. A member that found
// nothing to fetch for Starve gets chunks from the region whoever holds them.
func (t *Tracker) assign(s *swarmState, me *member, want int, now time.Time, regionHas func(int) bool, res *Result) {
	region := func(c int) bool { return regionHas == nil || regionHas(c) }
	want = min(want, agentwire.MaxSwarmWant-len(me.pending))
	if want <= 0 {
		return
	}
	live := 0
	for _, m := range s.members {
		if m.done.IsZero() {
			live++
		}
	}
	share := max(1, t.opts.SeedUploads/max(live, 1))
	mySeeds := 0
	for _, l := range me.pending {
		if l.source == "" && !l.fallback {
			mySeeds++
		}
	}
	// Walk the chunks from a point of the member's own, collecting per holder count the
	// first few candidates that a peer can serve now, and the chunks nobody holds or sends.
	start := int(maphash.String(t.seed, me.ID) % uint64(s.n))
	buckets := map[int32][]int{}
	candidates := max(8*want, 32)
	var seedable, any []int
	for k := range s.n {
		i := (start + k) % s.n
		if me.have.Has(i) || me.pending[i] != nil {
			continue
		}
		if len(any) < want && region(i) {
			any = append(any, i)
		}
		if s.holders[i] == 0 {
			if s.seeding[i] == 0 && len(seedable) < want && region(i) {
				seedable = append(seedable, i)
			}
			continue
		}
		// More candidates than wanted: the holders of the first few may all be busy while
		// those of others of the same rarity are free.
		if b := buckets[s.holders[i]]; len(b) < candidates {
			buckets[s.holders[i]] = append(b, i)
		}
	}
	add := func(c int, source string, fallback bool) {
		me.pending[c] = &lease{chunk: c, source: source, fallback: fallback, at: now}
		res.Assign = append(res.Assign, agentwire.SwarmAssignment{Chunk: c, Peer: source})
		switch {
		case source == "" && fallback:
			s.fallback++
			res.Fallback++
		case source == "":
			s.seeds++
			s.seeding[c]++
			res.Seeded++
		}
	}
	for _, c := range seedable {
		if len(res.Assign) >= want || mySeeds >= share || s.seeds >= t.opts.SeedUploads {
			break
		}
		add(c, "", false)
		mySeeds++
	}
	peers := map[string]bool{}
	var busy []int // chunks whose holders are all busy, rarest first
	for h := int32(1); h <= int32(len(s.members)) && len(res.Assign) < want; h++ {
		for _, c := range buckets[h] {
			if len(res.Assign) >= want {
				break
			}
			p := s.source(me, c, now, t.opts.PeerUploads)
			if p == nil {
				if region(c) {
					busy = append(busy, c)
				}
				continue
			}
			p.uploads++
			add(c, p.ID, false)
			if named := p.Addr.String() + string(p.Key); !peers[p.ID] && me.told[p.ID] != named {
				peers[p.ID] = true
				me.told[p.ID] = named
				res.Peers = append(res.Peers, agentwire.SwarmPeer{Member: p.ID, Addr: p.Addr.String(), Key: p.Key})
			}
		}
	}
	// Relief: with every chunk in the swarm the region's seed slots would stand idle while
	// members wait for busy holders; within its budget the region serves them. Not before the
	// first seed is over: the region's port then carries first sends only.
	budget := int(t.opts.Relief * float64(s.n))
	if len(busy) > 0 && s.seeds < t.opts.SeedUploads && s.relief < budget && !slices.Contains(s.holders, 0) {
		for _, c := range busy {
			if len(res.Assign) >= want || s.seeds >= t.opts.SeedUploads || s.relief >= budget {
				break
			}
			add(c, "", false)
			s.relief++
			res.Relief++
		}
	}
	if len(res.Assign) > 0 || len(me.pending) > 0 {
		me.fed = now
		return
	}
	if now.Sub(me.fed) < t.opts.Starve {
		return
	}
	for _, c := range any {
		if s.fallback >= t.opts.FallbackUploads || len(res.Assign) >= want {
			break
		}
		add(c, "", true)
	}
	if len(res.Assign) > 0 {
		me.fed = now
	}
}

// source picks the holder of chunk c that can serve me now with the fewest uploads under way.
func (s *swarmState) source(me *member, c int, now time.Time, limit int) *member {
	var best *member
	for _, p := range s.members {
		if p == me || p.dropped || me.excluded[p.ID] || p.uploads >= limit || !p.have.Has(c) {
			continue
		}
		if until, ok := me.avoid[p.ID]; ok && now.Before(until) {
			continue
		}
		if best == nil || p.uploads < best.uploads {
			best = p
		}
	}
	return best
}
