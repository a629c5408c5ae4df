// Package arrival lets a region serve a version while it is still arriving in its store: a
// share's copy (package transfer) registers the version once its manifest is checked against
// the version's id and central's signature, and reports each chunk the moment it has verified
// it; the region's agent API serves the manifest at once and each chunk as soon as it is here,
// so a deploy's terminals write while the share goes on (docs/sharing.md).
//
//	a, ok := reg.Begin(v)        // the copy, once the manifest is checked
//	a.Arrived(id, frame)         // each chunk verified (frame nil: the store holds it)
//	a.Committed(ids)             // chunks now readable from the store
//	a.End(err)                   // the copy's outcome; nil once the version is published
//
//	a := reg.Get(id)             // the agent API, for a version the store lacks
//	frame, err := a.Wait(ctx, c) // frame, or nil when the store has chunk c now
//
// Nothing here is final: the version is published only when the copy completes, and the agent
// checks every chunk against its id whatever the region serves.
//
// A chunk verified but not yet committed to the store is kept in memory, within the registry's
// MaxBuffered bytes; past that it becomes readable at the copy's next commit (about a second
// later), so memory stays bounded whatever the image's size.
package arrival

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"tms/manifest"
	"tms/store"
)

// DefaultMaxBuffered is how many bytes of verified, uncommitted chunk frames a registry keeps
// in memory unless told: a copy commits every second or 256 MiB, so a few seconds of a fast
// WAN link.
const DefaultMaxBuffered = 64 << 20

// DefaultLinger is how long an arrival that ended stays known, so that a request coming after
// a failed share learns why rather than "not found".
const DefaultLinger = 10 * time.Minute

// ErrFailed marks a chunk or version asked of an arrival that ended without the version:
// the share failed, and the error says why.
var ErrFailed = errors.New("the version stopped arriving")

// Registry is a region process's arriving versions. The zero value is ready; it is safe for
// concurrent use. Share one between the region's activities (which copy) and its agent API
// (which serves).
type Registry struct {
	// MaxBuffered bounds the bytes of chunk frames kept in memory across all arrivals
	// (DefaultMaxBuffered if 0; negative: none).
	MaxBuffered int64
	// Linger is how long an ended arrival stays known (DefaultLinger if 0).
	Linger time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu       sync.Mutex
	byID     map[manifest.ID]*Arrival
	buffered int64 // bytes of frames held by all arrivals
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Registry) maxBuffered() int64 {
	switch {
	case r.MaxBuffered < 0:
		return 0
	case r.MaxBuffered == 0:
		return DefaultMaxBuffered
	}
	return r.MaxBuffered
}

// Begin registers version v, whose manifest the caller checked against v.ID and whose
// signature it verified, as arriving. If v is arriving already, it returns that arrival and
// false: the caller joins it (waits for its end) rather than moving the version twice.
func (r *Registry) Begin(v *store.Version) (*Arrival, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked()
	if a := r.byID[v.ID]; a != nil && !a.ended() {
		return a, false
	}
	a := &Arrival{r: r, v: v, index: map[manifest.ID]int{}, frames: map[manifest.ID][]byte{}, changed: make(chan struct{}), done: make(chan struct{})}
	for _, c := range v.Manifest.Chunks {
		if c.IsZero() {
			continue
		}
		if _, ok := a.index[c]; !ok {
			a.index[c] = len(a.order)
			a.order = append(a.order, c)
		}
	}
	a.state = make([]chunkState, len(a.order))
	a.progress = r.now()
	if r.byID == nil {
		r.byID = map[manifest.ID]*Arrival{}
	}
	r.byID[v.ID] = a
	return a, true
}

// Get returns the arrival of version id: one under way, or one that ended within Linger (its
// Err says how); nil if there is none.
func (r *Registry) Get(id manifest.ID) *Arrival {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked()
	return r.byID[id]
}

// Running returns the arrival of version id if one is under way.
func (r *Registry) Running(id manifest.ID) *Arrival {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.byID[id]; a != nil && !a.ended() {
		return a
	}
	return nil
}

// Buffered returns the bytes of chunk frames the registry holds in memory.
func (r *Registry) Buffered() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buffered
}

// expireLocked forgets arrivals that ended more than Linger ago. Called with r.mu held.
func (r *Registry) expireLocked() {
	linger := r.Linger
	if linger <= 0 {
		linger = DefaultLinger
	}
	now := r.now()
	for id, a := range r.byID {
		if a.ended() && now.Sub(a.endedAt) > linger {
			delete(r.byID, id)
		}
	}
}

type chunkState uint8

const (
	missing  chunkState = iota
	verified            // checked, neither committed nor kept in memory: wait for the commit
	buffered            // checked and kept in memory until the commit
	stored              // readable from the store
)

// Arrival is one version arriving in the region's store. Its state is guarded by its
// registry's lock: one lock for the memory bound and every arrival's chunks.
type Arrival struct {
	r     *Registry
	v     *store.Version
	order []manifest.ID       // distinct non-zero chunks, in the order of first appearance
	index map[manifest.ID]int // chunk → position in order

	state    []chunkState
	frames   map[manifest.ID][]byte // the buffered chunks' frames
	have     int                    // chunks in state buffered or stored
	progress time.Time              // when a chunk last arrived
	changed  chan struct{}          // closed and replaced at every change
	done     chan struct{}          // closed at End
	endedAt  time.Time
	err      error
}

// Version returns the arriving version (its manifest checked, its chunks perhaps not here).
func (a *Arrival) Version() *store.Version { return a.v }

// NumChunks returns the version's distinct non-zero chunks.
func (a *Arrival) NumChunks() int { return len(a.order) }

// Chunk returns the i-th distinct non-zero chunk, in the order of first appearance in the
// manifest (the order agentwire's swarm bitmaps use).
func (a *Arrival) Chunk(i int) manifest.ID { return a.order[i] }

// Done is closed when the arrival ends.
func (a *Arrival) Done() <-chan struct{} { return a.done }

func (a *Arrival) ended() bool { return !a.endedAt.IsZero() }

// signalLocked wakes the waiters. Called with a.r.mu held.
func (a *Arrival) signalLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Err returns why the arrival ended without the version (wrapping ErrFailed), nil while it
// runs and once the version is published.
func (a *Arrival) Err() error {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	return a.err
}

// Arrived records chunk id as verified: frame nil for a chunk the store held already (readable
// now); otherwise its checked stored frame, which is served from memory until Committed names
// the chunk, if the registry's bound allows (the frame is copied). Chunks not in the version
// are ignored.
func (a *Arrival) Arrived(id manifest.ID, frame []byte) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	i, ok := a.index[id]
	if !ok || a.ended() || a.state[i] != missing {
		return
	}
	switch {
	case frame == nil:
		a.state[i] = stored
	case a.r.buffered+int64(len(frame)) <= a.r.maxBuffered():
		a.frames[id] = append([]byte(nil), frame...)
		a.r.buffered += int64(len(frame))
		a.state[i] = buffered
	default:
		a.state[i] = verified
		return // nothing new to serve until the commit
	}
	a.have++
	a.progress = a.r.now()
	a.signalLocked()
}

// Committed records that chunks ids are readable from the store: their frames leave memory.
func (a *Arrival) Committed(ids []manifest.ID) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	if a.ended() {
		return
	}
	changed := false
	for _, id := range ids {
		i, ok := a.index[id]
		if !ok {
			continue
		}
		switch a.state[i] {
		case buffered:
			a.r.buffered -= int64(len(a.frames[id]))
			delete(a.frames, id)
		case verified, missing:
			a.have++
			a.progress = a.r.now()
			changed = true
		}
		a.state[i] = stored
	}
	if changed {
		a.signalLocked()
	}
}

// End ends the arrival: err nil once the version is published in the store, else why the copy
// failed. Waiters wake; frames leave memory.
func (a *Arrival) End(err error) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	if a.ended() {
		return
	}
	if err != nil {
		a.err = fmt.Errorf("%w: version %s: %w", ErrFailed, a.v.ID.Short(), err)
	}
	for id, f := range a.frames {
		a.r.buffered -= int64(len(f))
		delete(a.frames, id)
	}
	a.endedAt = a.r.now()
	close(a.done)
	a.signalLocked()
}

// Has reports whether chunk id is here to be served (in memory or in the store). After a
// successful end every chunk is.
func (a *Arrival) Has(id manifest.ID) bool {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	i, ok := a.index[id]
	return ok && a.hasLocked(i)
}

// HasIndex is Has for the i-th distinct chunk.
func (a *Arrival) HasIndex(i int) bool {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	return i >= 0 && i < len(a.state) && a.hasLocked(i)
}

func (a *Arrival) hasLocked(i int) bool {
	if a.ended() {
		return a.err == nil
	}
	return a.state[i] == buffered || a.state[i] == stored
}

// Progress returns how many distinct chunks are here, of how many, and when one last came.
func (a *Arrival) Progress() (have, total int, last time.Time) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	return a.have, len(a.order), a.progress
}

// Wait waits until chunk id is here and returns its frame from memory, or nil when it is to be
// read from the store (it was committed, or the version is published). It fails with an error
// wrapping ErrFailed if the arrival ends without the version, with store.ErrNotFound for a
// chunk not in the version, and with ctx's error when ctx ends first: bound the wait with ctx.
func (a *Arrival) Wait(ctx context.Context, id manifest.ID) ([]byte, error) {
	a.r.mu.Lock()
	i, ok := a.index[id]
	a.r.mu.Unlock()
	if !ok {
		return nil, &store.Error{Kind: store.ErrNotFound, What: "chunk " + id.String(),
			Err: fmt.Errorf("not part of version %s", a.v.ID.Short())}
	}
	for {
		a.r.mu.Lock()
		switch {
		case a.ended():
			err := a.err
			a.r.mu.Unlock()
			return nil, err
		case a.state[i] == buffered:
			f := a.frames[id]
			a.r.mu.Unlock()
			return f, nil
		case a.state[i] == stored:
			a.r.mu.Unlock()
			return nil, nil
		}
		ch := a.changed
		a.r.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}
