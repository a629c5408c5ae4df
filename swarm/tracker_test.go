package swarm

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"tms/agentwire"
	"tms/manifest"
)

var testVersion = manifest.ID{1, 2, 3}

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_800_000_000, 0)} }
func testMember(i int) Member {
	return Member{ID: fmt.Sprintf("task-%d", i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 98, 0, byte(10 + i)}), 7000),
		Key: make(ed25519.PublicKey, ed25519.PublicKeySize)}
}

// fullBitmap marks all n chunks held.
func fullBitmap(n int) Bitmap {
	b := NewBitmap(n)
	for i := range n {
		b.Set(i)
	}
	return b
}

func request(have Bitmap, want int, failed ...agentwire.SwarmFailure) *agentwire.SwarmRequest {
	return &agentwire.SwarmRequest{Port: 7000, Key: make([]byte, 32), Have: append([]byte(nil), have...), Want: want, Failed: failed}
}

// checkCounts checks the tracker's counters against its members, which every call must keep.
func checkCounts(t *testing.T, tr *Tracker) {
	t.Helper()
	for _, s := range tr.swarms {
		holders := make([]int32, s.n)
		seeding := make([]int32, s.n)
		uploads := map[string]int{}
		seeds, fallback := 0, 0
		for _, m := range s.members {
			for i := range s.n {
				if !m.dropped && m.have.Has(i) {
					holders[i]++
				}
			}
			for c, l := range m.pending {
				switch {
				case l.source == "" && l.fallback:
					fallback++
				case l.source == "":
					seeds++
					seeding[c]++
				default:
					uploads[l.source]++
				}
			}
		}
		for i := range s.n {
			if holders[i] != s.holders[i] || seeding[i] != s.seeding[i] {
				t.Fatalf("chunk %d: holders %d (counted %d), seeding %d (counted %d)", i, s.holders[i], holders[i], s.seeding[i], seeding[i])
			}
		}
		if seeds != s.seeds || fallback != s.fallback {
			t.Fatalf("region sends %d+%d, counted %d+%d", s.seeds, s.fallback, seeds, fallback)
		}
		for id, m := range s.members {
			if m.uploads != uploads[id] {
				t.Fatalf("member %s uploads %d, counted %d", id, m.uploads, uploads[id])
			}
		}
	}
}

func TestLoneMemberGetsEverythingFromTheRegion(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	have := NewBitmap(10)
	res := tr.Poll(testVersion, 10, testMember(1), request(have, 8), false)
	if len(res.Assign) != 4 || res.Seeded != 4 {
		t.Fatalf("a lone member got %+v, want the region's 4 seed sends", res.Assign)
	}
	for _, a := range res.Assign {
		if a.Peer != "" {
			t.Fatalf("assigned from peer %q with no peers", a.Peer)
		}
	}
	checkCounts(t, tr)
}

// TestSimulatedClassroom runs the tracker against members that fetch one chunk per round from
// wherever it assigns, and checks that the region sends each chunk about once and everyone
// finishes.
func TestSimulatedClassroom(t *testing.T) {
	for _, members := range []int{2, 10, 30} {
		t.Run(fmt.Sprint(members), func(t *testing.T) {
			const n = 100
			c := newClock()
			tr := NewTracker(Options{Now: c.now})
			have := make([]Bitmap, members)
			inflight := make([][]agentwire.SwarmAssignment, members)
			for i := range have {
				have[i] = NewBitmap(n)
			}
			regionSends, rounds := 0, 0
			for ; rounds < 2000; rounds++ {
				all := true
				for i := range members {
					for _, a := range inflight[i] {
						have[i].Set(a.Chunk)
					}
					inflight[i] = nil
					if have[i].Count() < n {
						all = false
					}
				}
				if all {
					break
				}
				for i := range members {
					if have[i].Count() == n {
						tr.Poll(testVersion, n, testMember(i), request(have[i], 0), true)
						continue
					}
					res := tr.Poll(testVersion, n, testMember(i), request(have[i], 4), false)
					regionSends += res.Seeded + res.Fallback
					inflight[i] = res.Assign
					checkCounts(t, tr)
				}
				c.add(100 * time.Millisecond)
			}
			if rounds == 2000 {
				t.Fatalf("the swarm did not finish")
			}
			t.Logf("%d members, %d chunks: %d rounds, region sent %d chunks", members, n, rounds, regionSends)
			if regionSends > n*3/2 {
				t.Fatalf("region sent %d chunks for %d members of a %d-chunk version; want at most 1.5×", regionSends, members, n)
			}
		})
	}
}

func TestBadPeerIsDroppedAfterTwoReports(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	const n = 8
	full := fullBitmap(n)
	bad := testMember(0)
	tr.Poll(testVersion, n, bad, request(full, 0), false)
	get := func(i int, failed ...agentwire.SwarmFailure) Result {
		return tr.Poll(testVersion, n, testMember(i), request(NewBitmap(n), 2, failed...), false)
	}
	r1 := get(1)
	if len(r1.Assign) == 0 || r1.Assign[0].Peer != bad.ID && r1.Assign[len(r1.Assign)-1].Peer != bad.ID {
		t.Fatalf("member 1 was not sent to the only holder: %+v", r1.Assign)
	}
	var fromBad int
	for _, a := range r1.Assign {
		if a.Peer == bad.ID {
			fromBad = a.Chunk
		}
	}
	// One report: only the reporter stops going there.
	r1 = get(1, agentwire.SwarmFailure{Chunk: fromBad, Peer: bad.ID, Bad: true})
	for _, a := range r1.Assign {
		if a.Peer == bad.ID {
			t.Fatalf("member 1 was sent back to the peer it reported: %+v", r1.Assign)
		}
	}
	r2 := get(2)
	var to int = -1
	for _, a := range r2.Assign {
		if a.Peer == bad.ID {
			to = a.Chunk
		}
	}
	if to < 0 {
		t.Fatalf("member 2 was not sent to a peer only one member reported: %+v", r2.Assign)
	}
	r2 = get(2, agentwire.SwarmFailure{Chunk: to, Peer: bad.ID, Bad: true})
	if len(r2.Dropped) != 1 || r2.Dropped[0] != bad.ID {
		t.Fatalf("two reports did not drop the peer: %+v", r2)
	}
	for i := 3; i < 6; i++ {
		for _, a := range get(i).Assign {
			if a.Peer == bad.ID {
				t.Fatalf("member %d sent to a dropped peer", i)
			}
		}
	}
	checkCounts(t, tr)
}

func TestSilentMembersAreForgotten(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	const n = 4
	full := fullBitmap(n)
	tr.Poll(testVersion, n, testMember(0), request(full, 0), false)
	r := tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 4), false)
	if r.Seeded != 0 {
		t.Fatalf("the region sent chunks a peer holds: %+v", r.Assign)
	}
	c.add(31 * time.Second)
	r = tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 4), false)
	if r.Seeded != 4 {
		t.Fatalf("after its only peer went silent a member got %+v, want all from the region", r.Assign)
	}
	checkCounts(t, tr)
}

func TestStarvedMemberFallsBackToTheRegion(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now, PeerUploads: 1})
	const n = 1
	full := fullBitmap(n)
	tr.Poll(testVersion, n, testMember(0), request(full, 0), false)
	if r := tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 4), false); len(r.Assign) != 1 || r.Assign[0].Peer == "" {
		t.Fatalf("member 1: %+v", r.Assign)
	}
	// Member 2 finds the only holder busy: it waits, then the region serves it.
	if r := tr.Poll(testVersion, n, testMember(2), request(NewBitmap(n), 4), false); len(r.Assign) != 0 || r.Retry == 0 {
		t.Fatalf("member 2 should wait for the busy peer: %+v", r)
	}
	c.add(4 * time.Second)
	tr.Poll(testVersion, n, testMember(0), request(full, 0), false)
	if r := tr.Poll(testVersion, n, testMember(2), request(NewBitmap(n), 4), false); len(r.Assign) != 1 || r.Assign[0].Peer != "" {
		t.Fatalf("a starved member was not served by the region: %+v", r.Assign)
	}
	checkCounts(t, tr)
}

func TestRestartedTrackerLearnsFromCalls(t *testing.T) {
	c := newClock()
	const n = 4
	full := fullBitmap(n)
	tr := NewTracker(Options{Now: c.now})
	tr.Poll(testVersion, n, testMember(0), request(full, 0), false)
	r := tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 2), false)
	if r.Seeded != 0 || len(r.Peers) != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestFinishedMemberLingersOnlyWhileNeeded(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	const n = 2
	full := fullBitmap(n)
	if r := tr.Poll(testVersion, n, testMember(0), request(full, 0), true); r.Linger != 0 {
		t.Fatalf("nobody needs anything, linger %s", r.Linger)
	}
	tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 0), false)
	if r := tr.Poll(testVersion, n, testMember(0), request(full, 0), true); r.Linger == 0 {
		t.Fatalf("a member still lacks chunks, and the finished one does not linger")
	}
	c.add(21 * time.Second)
	tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 0), false)
	if _, ok := tr.swarms[testVersion].members[testMember(0).ID]; ok {
		t.Fatal("the finished member is kept after its linger")
	}
}

func TestReliefOnlyAfterTheFirstSeedAndWithinItsBudget(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now, PeerUploads: 1, Relief: 0.5})
	const n = 8
	half, full := NewBitmap(n), fullBitmap(n)
	for i := range n {
		if i < n/2 {
			half.Set(i)
		}
	}
	// Half the chunks are in the swarm: members whose holders are busy wait, the region
	// seeds the rest.
	tr.Poll(testVersion, n, testMember(0), request(half, 0), false)
	for i := 1; i <= 3; i++ {
		r := tr.Poll(testVersion, n, testMember(i), request(NewBitmap(n), 8), false)
		if r.Relief != 0 {
			t.Fatalf("relief before every chunk is in the swarm: %+v", r)
		}
	}
	checkCounts(t, tr)
	// Every chunk is held, by one busy member: the region relieves, at most n/2 chunks in all.
	tr = NewTracker(Options{Now: c.now, PeerUploads: 1, Relief: 0.5})
	tr.Poll(testVersion, n, testMember(0), request(full, 0), false)
	relief := 0
	for i := 1; i <= 6; i++ {
		r := tr.Poll(testVersion, n, testMember(i), request(NewBitmap(n), 8), false)
		relief += r.Relief
		if r.Relief > 0 && r.Seeded < r.Relief {
			t.Fatalf("relief not counted among the seed slots' sends: %+v", r)
		}
	}
	if relief == 0 || relief > n/2 {
		t.Fatalf("the region relieved %d chunks; want 1 to %d", relief, n/2)
	}
	checkCounts(t, tr)
}

func TestPeersAreNamedOncePerSession(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	const n = 4
	full := fullBitmap(n)
	tr.Poll(testVersion, n, testMember(0), request(full, 0), false)
	if r := tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 1), false); len(r.Assign) != 1 || len(r.Peers) != 1 {
		t.Fatalf("first assignment from a peer: %+v", r)
	}
	if r := tr.Poll(testVersion, n, testMember(1), request(NewBitmap(n), 1), false); len(r.Assign) != 1 || len(r.Peers) != 0 {
		t.Fatalf("a peer named again to the same session: %+v", r)
	}
	fresh := request(NewBitmap(n), 1)
	fresh.Fresh = true
	if r := tr.Poll(testVersion, n, testMember(1), fresh, false); len(r.Assign) != 1 || len(r.Peers) != 1 {
		t.Fatalf("a new session of the member was not told its peer: %+v", r)
	}
}

func TestBusyHolderDoesNotHideFreeOnes(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now, PeerUploads: 1})
	const n = 64
	// Member 0 holds every even chunk, member 1 every odd one: each chunk has one holder.
	even, odd := NewBitmap(n), NewBitmap(n)
	for i := range n {
		if i%2 == 0 {
			even.Set(i)
		} else {
			odd.Set(i)
		}
	}
	tr.Poll(testVersion, n, testMember(0), request(even, 0), false)
	tr.Poll(testVersion, n, testMember(1), request(odd, 0), false)
	// Member 2 takes one chunk: one of the two holders is now busy.
	if r := tr.Poll(testVersion, n, testMember(2), request(NewBitmap(n), 1), false); len(r.Assign) != 1 {
		t.Fatalf("%+v", r)
	}
	// Member 3 asks for one: whatever its walk meets first, the free holder serves it.
	r := tr.Poll(testVersion, n, testMember(3), request(NewBitmap(n), 1), false)
	if len(r.Assign) != 1 || r.Assign[0].Peer == "" {
		t.Fatalf("a free holder of chunks as rare as the busy one's was not used: %+v", r)
	}
	checkCounts(t, tr)
}

func TestGoneMembers(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	const n = 2
	full := fullBitmap(n)
	tr.Poll(testVersion, n, testMember(3), request(NewBitmap(n), 0), false) // keeps 0 lingering
	tr.Poll(testVersion, n, testMember(0), request(full, 0), true)          // finished
	tr.Poll(testVersion, n, testMember(1), request(full, 0), false)         // still writing
	r := tr.Poll(testVersion, n, testMember(2), request(NewBitmap(n), 2), false)
	if len(r.Assign) != 2 {
		t.Fatalf("%+v", r)
	}
	var failed []agentwire.SwarmFailure
	for _, a := range r.Assign {
		failed = append(failed, agentwire.SwarmFailure{Chunk: a.Chunk, Peer: a.Peer, Gone: true})
	}
	// Neither peer answers: the finished one is forgotten, the writing one avoided for a while.
	r = tr.Poll(testVersion, n, testMember(2), request(NewBitmap(n), 2, failed...), false)
	if _, ok := tr.swarms[testVersion].members[testMember(0).ID]; ok {
		t.Fatal("a finished member nobody can reach is still a source")
	}
	if _, ok := tr.swarms[testVersion].members[testMember(1).ID]; !ok {
		t.Fatal("a writing member was forgotten after one failed connection")
	}
	for _, a := range r.Assign {
		if a.Peer != "" {
			t.Fatalf("sent to peer %s right after it could not be reached: %+v", a.Peer, r.Assign)
		}
	}
	checkCounts(t, tr)
}

func FuzzPoll(f *testing.F) {
	f.Add(uint8(5), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add(uint8(1), []byte{255, 0, 255})
	f.Fuzz(func(t *testing.T, nn uint8, ops []byte) {
		n := int(nn%40) + 1
		c := newClock()
		tr := NewTracker(Options{Now: c.now})
		haves := make([]Bitmap, 6)
		for i := range haves {
			haves[i] = NewBitmap(n)
		}
		for k := 0; k+1 < len(ops); k += 2 {
			who, what := int(ops[k]%6), ops[k+1]
			req := request(haves[who], int(what%9))
			if what&0x10 != 0 {
				haves[who].Set(int(what) % n)
				req.Have = append([]byte(nil), haves[who]...)
			}
			if what&0x20 != 0 {
				req.Failed = []agentwire.SwarmFailure{{Chunk: int(what) % n, Peer: testMember(int(what) % 6).ID, Bad: what&0x40 != 0}}
			}
			if err := req.Check(n); err != nil {
				t.Fatal(err)
			}
			tr.Poll(testVersion, n, testMember(who), req, what&0x80 != 0 && what&0x8 != 0)
			checkCounts(t, tr)
			c.add(time.Duration(what) * 100 * time.Millisecond)
		}
	})
}

// TestRegionSendsOnlyChunksItHas checks a swarm of a version still arriving in the region:
// the region is never named the source of a chunk it lacks, not as first seed, relief or
// fallback, while a peer holding one still serves it; once the chunks arrive they are sent.
func TestRegionSendsOnlyChunksItHas(t *testing.T) {
	c := newClock()
	tr := NewTracker(Options{Now: c.now})
	const n = 16
	arrived := map[int]bool{0: true, 1: true}
	has := func(i int) bool { return arrived[i] }
	// Member 1 holds chunk 5, which the region lacks.
	b1 := NewBitmap(n)
	b1.Set(5)
	tr.PollHaving(testVersion, n, testMember(1), request(b1, 0), false, has)
	for round := range 3 {
		res := tr.PollHaving(testVersion, n, testMember(0), request(NewBitmap(n), 8), false, has)
		for _, a := range res.Assign {
			if a.Peer == "" && !arrived[a.Chunk] {
				t.Fatalf("round %d: the region was sent for chunk %d, which it lacks", round, a.Chunk)
			}
			if a.Peer != "" && a.Chunk != 5 {
				t.Fatalf("round %d: peer %s was sent for chunk %d it lacks", round, a.Peer, a.Chunk)
			}
		}
		checkCounts(t, tr)
		c.add(5 * time.Second) // past Starve: fallback applies too
	}
	// Chunk 9 arrives: the region sends it to member 0, which took 0, 1 and 5 meanwhile.
	arrived[9] = true
	b0 := NewBitmap(n)
	for _, i := range []int{0, 1, 5} {
		b0.Set(i)
	}
	got := false
	for range 3 {
		c.add(25 * time.Second) // leases lapse
		tr.PollHaving(testVersion, n, testMember(1), request(b1, 0), false, has)
		res := tr.PollHaving(testVersion, n, testMember(0), request(b0, 8), false, has)
		for _, a := range res.Assign {
			if a.Peer == "" && a.Chunk == 9 {
				got = true
			}
			if a.Peer == "" && !arrived[a.Chunk] {
				t.Fatalf("the region was sent for chunk %d, which it lacks", a.Chunk)
			}
		}
	}
	if !got {
		t.Fatal("a chunk that arrived in the region was never sent from it")
	}
}
