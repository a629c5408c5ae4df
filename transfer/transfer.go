// Package transfer copies image versions between stores: the data plane of sharing an image
// with a region, of relaying it through central storage, and of a capture's upload. Only the
// chunks the destination lacks move; every chunk is checked against its id when it arrives;
// the manifest is published last, so the destination never shows a version it cannot serve.
//
//	res, err := transfer.Copy(ctx, src, dst, versionID, transfer.Options{Progress: report})
//
// A copy that is interrupted keeps the chunks it committed; running it again moves only the
// rest, which is how a crashed worker resumes without moving the image twice.
package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"tms/manifest"
	"tms/signing"
	"tms/store"
	"tms/wanrate"
)

// Source is where a copy reads from: a store, or a peer's store over HTTP.
type Source interface {
	// GetManifestBytes returns the encoded manifest of version id.
	GetManifestBytes(ctx context.Context, id manifest.ID) ([]byte, error)
	// GetChunkFrame returns the stored (compressed) frame of chunk id. The copy checks it.
	GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error)
	String() string
}

// SignedSource is a Source that also gives a version's signature (package signing), so a copy
// carries it. GetSignature returns an error wrapping store.ErrNotFound for a version the source
// holds unsigned.
type SignedSource interface {
	Source
	GetSignature(ctx context.Context, id manifest.ID) (signing.Signature, error)
}

var (
	_ SignedSource = StoreSource{}
	_ SignedSource = WaitingSource{}
	_ SignedSource = (*HTTPSource)(nil)
)

// StatsSource is a Source that can say what a version takes in its own store (its stats), so
// a target can estimate the room a copy needs before it moves a byte. GetStats returns an error
// wrapping store.ErrNotFound when the source keeps none.
type StatsSource interface {
	GetStats(ctx context.Context, id manifest.ID) (store.Stats, error)
}

var (
	_ StatsSource = StoreSource{}
	_ StatsSource = WaitingSource{}
	_ StatsSource = (*HTTPSource)(nil)
)

// GetStats returns the store's stats of version id.
func (s StoreSource) GetStats(ctx context.Context, id manifest.ID) (store.Stats, error) {
	return s.S.GetStats(ctx, id)
}

// StoreSource reads from a store directly.
type StoreSource struct{ S *store.Store }

var _ Source = StoreSource{}

func (s StoreSource) GetManifestBytes(ctx context.Context, id manifest.ID) ([]byte, error) {
	v, err := s.S.GetManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	return v.Encoded, nil
}

func (s StoreSource) GetSignature(ctx context.Context, id manifest.ID) (signing.Signature, error) {
	return s.S.GetSignature(ctx, id)
}

func (s StoreSource) GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error) {
	return s.S.Backend().Get(ctx, store.ChunkKey(id))
}

func (s StoreSource) String() string { return s.S.String() }

// Options tune Copy.
type Options struct {
	// Jobs is how many chunks move at once (default: 16, at least 2 per CPU).
	Jobs int
	// Progress, if set, is called after each chunk with the chunks handled so far (moved or
	// already present), the distinct chunks of the version, and the bytes moved so far. Calls
	// never overlap, though they come from the copy's worker goroutines, and their figures
	// never go backwards: each call reports the copy's position when it starts, so two chunks
	// that finish together may give two calls with the same figures. On success the last call
	// has Done == Total. Progress holds up the chunks that finish while it runs: keep it quick
	// (an activity heartbeat is).
	Progress func(Progress)
	// Tag, if set, points NAME:TAG in the destination at the version once it is published.
	Tag string
	// Meter, if set, counts the chunks the copy fetches: their bytes, and each one kept or
	// refused.
	Meter Meter
	// Manifest, if set, is called once the version's manifest is checked against its id,
	// before any chunk moves (not when dst holds the version already); an error stops the
	// copy. A region announces the arriving version with it (package arrival).
	Manifest func(ctx context.Context, v *store.Version) error
	// Arrived, if set, is called for each distinct chunk of the version once dst holds it
	// (frame nil) or once it is fetched and checked (its stored frame, which dst shows only
	// after a Committed call names the chunk; the callee must not keep the slice). Calls may
	// overlap.
	Arrived func(id manifest.ID, frame []byte)
	// Committed, if set, is called with the fetched chunks that dst now shows, after each
	// commit. Calls may overlap.
	Committed func(ids []manifest.ID)
	// Pace, if set, paces the chunks the copy writes to dst, each taking its bytes before it
	// is written: for a destination across the WAN (the relay). A source across the WAN
	// paces its own reads (HTTPSource.Limit, WaitingSource.Pace).
	Pace *wanrate.Objects
	// Rate is the WAN cap the copy runs under at its start, in bytes a second (0: none). Under
	// a cap the copy moves no more chunks at once than move in half a minute at it (and at
	// least 2), so that a request waiting its turn is not timed out or taken for stalled.
	Rate int64
}

// paceWindow is how long the chunks a copy moves at once may take together at its Rate.
const paceWindow = 30 * time.Second

// jobsAt is how many chunks move at once at rate with chunks of chunkSize, at most jobs.
func jobsAt(jobs int, rate, chunkSize int64) int {
	if rate <= 0 || chunkSize <= 0 {
		return jobs
	}
	n := rate * int64(paceWindow/time.Second) / chunkSize
	return int(max(2, min(int64(jobs), n)))
}

// Meter counts chunks as they move (package metrics's Flow: one path and direction).
type Meter interface {
	// Bytes counts n bytes of chunk frames moved.
	Bytes(n int64)
	// Verified counts a chunk received that matched its id.
	Verified()
	// Refused counts a chunk received and refused, for reason (metrics.Reason*).
	Refused(reason string)
}

// Reasons a chunk is refused, as Meter.Refused is told (the values of metrics.Reason*).
const (
	RefusedHashMismatch = "hash_mismatch"
	RefusedBadFrame     = "bad_frame"
)

// RefusalReason says why DecodeChunk refused a chunk, for a Meter.
func RefusalReason(err error) string {
	if errors.Is(err, store.ErrHashMismatch) {
		return RefusedHashMismatch
	}
	return RefusedBadFrame
}

// noMeter counts nothing.
type noMeter struct{}

func (noMeter) Bytes(int64)    {}
func (noMeter) Verified()      {}
func (noMeter) Refused(string) {}

// Progress is a copy's position.
type Progress struct {
	Done, Total int64 // distinct chunks handled / in the version
	MovedBytes  int64 // compressed bytes fetched from the source
}

// Result says what a copy did.
type Result struct {
	Version     *store.Version
	Chunks      int64 // distinct non-zero chunks in the version
	Moved       int64 // chunks fetched from the source
	MovedBytes  int64
	Present     int64 // chunks the destination already held
	Elapsed     time.Duration
	AlreadyHere bool // the destination held the whole version before
}

// commitEvery and commitInterval bound how much a copy holds uncommitted, in bytes and in
// time, so a crash loses little of its work: a retried copy fetches again only what was not
// committed. A commit is one syncfs on a directory store, cheap next to a second of transfer.
const (
	commitEvery    = 256 << 20
	commitInterval = time.Second
)

// ErrSourceCorrupt marks a chunk or manifest the source sent that does not match its id. The
// copy stops; the destination keeps nothing unverified.
var ErrSourceCorrupt = errors.New("source sent corrupt data")

// Copy makes version id, with every chunk it needs, present in dst.
func Copy(ctx context.Context, src Source, dst *store.Store, id manifest.ID, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Jobs <= 0 {
		opts.Jobs = max(16, 2*runtime.GOMAXPROCS(0))
	}
	res := &Result{}
	if v, err := dst.GetManifest(ctx, id); err == nil {
		res.Version, res.AlreadyHere = v, true
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}

	var v *store.Version
	if res.AlreadyHere {
		v = res.Version
	} else {
		b, err := src.GetManifestBytes(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("manifest %s from %s: %w", id.Short(), src, err)
		}
		m, err := manifest.Decode(b)
		if err != nil {
			return nil, fmt.Errorf("manifest %s from %s: %w: %w", id.Short(), src, ErrSourceCorrupt, err)
		}
		if got := manifest.VersionID(m.Hash, b); got != id {
			return nil, fmt.Errorf("manifest %s from %s hashes to %s: %w", id.Short(), src, got.Short(), ErrSourceCorrupt)
		}
		v = &store.Version{ID: id, Manifest: m, Encoded: b}
		if opts.Manifest != nil {
			if err := opts.Manifest(ctx, v); err != nil {
				return nil, err
			}
		}
	}

	opts.Jobs = jobsAt(opts.Jobs, opts.Rate, v.Manifest.ChunkSize)

	lock, err := dst.LockShared(ctx, "copy of "+v.Manifest.Meta.Name+"@"+id.Short()+" from "+src.String(), nil)
	if err != nil {
		return nil, err
	}
	defer lock.Release(ctx)

	var ids []manifest.ID
	seen := map[manifest.ID]bool{}
	for _, c := range v.Manifest.Chunks {
		if !c.IsZero() && !seen[c] {
			seen[c] = true
			ids = append(ids, c)
		}
	}
	res.Chunks = int64(len(ids))

	meter := opts.Meter
	if meter == nil {
		meter = noMeter{}
	}
	w := dst.NewChunkWriter()
	// commit makes the chunks put so far visible and tells opts.Committed which: those put
	// before it began (a chunk put while it runs may or may not be in it; the next names it).
	var pendingMu sync.Mutex
	var pending []manifest.ID
	commit := func(ctx context.Context) error {
		pendingMu.Lock()
		ids := pending
		pending = nil
		pendingMu.Unlock()
		if err := w.Commit(ctx); err != nil {
			return err
		}
		if opts.Committed != nil && len(ids) > 0 {
			opts.Committed(ids)
		}
		return nil
	}
	arrived := func(id manifest.ID, frame []byte) {
		if opts.Arrived == nil {
			return
		}
		opts.Arrived(id, frame)
		if frame != nil {
			pendingMu.Lock()
			pending = append(pending, id)
			pendingMu.Unlock()
		}
	}
	var staged, lastCommit atomic.Int64
	lastCommit.Store(time.Now().UnixNano())
	var mu sync.Mutex // guards res, stats and done
	var done int64
	var stats store.Stats
	// report calls opts.Progress one call at a time, each with the position when it starts:
	// positions only grow, so the figures a caller sees never go backwards, whichever
	// worker's call comes first.
	var progressMu sync.Mutex
	report := func() {
		if opts.Progress == nil {
			return
		}
		progressMu.Lock()
		defer progressMu.Unlock()
		mu.Lock()
		p := Progress{Done: done, Total: res.Chunks, MovedBytes: res.MovedBytes}
		mu.Unlock()
		opts.Progress(p)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for _, c := range ids {
		g.Go(func() error {
			moved, size, err := copyChunk(gctx, src, dst, w, v.Manifest.Hash, c, meter, arrived, opts.Pace)
			if err != nil {
				return err
			}
			mu.Lock()
			stats.StoredBytes += size
			if moved {
				res.Moved++
				res.MovedBytes += size
				stats.AddedBytes += size
				stats.AddedChunks++
			} else {
				res.Present++
			}
			done++
			mu.Unlock()
			if moved {
				n, now := staged.Add(size), time.Now().UnixNano()
				last := lastCommit.Load()
				if (n >= commitEvery || now-last >= int64(commitInterval)) && lastCommit.CompareAndSwap(last, now) {
					staged.Store(0)
					if err := commit(gctx); err != nil {
						return err
					}
				}
			}
			report()
			return nil
		})
	}
	err = g.Wait()
	// Keep what arrived and was checked, whatever happened: a retry skips it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if cerr := commit(cctx); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := lock.Err(); err != nil {
		return nil, fmt.Errorf("copy of %s stopped before publishing: %w", id.Short(), err)
	}
	// The signature goes first, so a published copy is signed whenever its source was.
	if err := CopySignature(ctx, src, dst, id); err != nil {
		return nil, err
	}
	if !res.AlreadyHere {
		if res.Version, err = dst.PutVersion(ctx, v.Encoded, stats); err != nil {
			return nil, err
		}
	}
	if opts.Tag != "" {
		if err := dst.SetTag(ctx, v.Manifest.Meta.Name, opts.Tag, id); err != nil {
			return nil, err
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// CopySignature copies version id's signature from src to dst if src has one that dst lacks.
// It does not check the signature: whoever deploys the version does, with central's key.
func CopySignature(ctx context.Context, src Source, dst *store.Store, id manifest.ID) error {
	ss, ok := src.(SignedSource)
	if !ok {
		return nil
	}
	sig, err := ss.GetSignature(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if errors.Is(err, store.ErrCorrupt) {
		return fmt.Errorf("signature of %s from %s: %w: %w", id.Short(), src, ErrSourceCorrupt, err)
	}
	if err != nil {
		return fmt.Errorf("signature of %s from %s: %w", id.Short(), src, err)
	}
	if have, err := dst.GetSignature(ctx, id); err == nil && have.KeyID == sig.KeyID && string(have.Signature) == string(sig.Signature) {
		return nil
	}
	return dst.PutSignature(ctx, id, sig)
}

// copyChunk moves one chunk if dst lacks it, checking it first. It reports whether it moved
// the chunk and the chunk's stored size.
func copyChunk(ctx context.Context, src Source, dst *store.Store, w *store.ChunkWriter, h manifest.Hash, id manifest.ID, meter Meter, arrived func(manifest.ID, []byte), pace *wanrate.Objects) (bool, int64, error) {
	size, err := dst.StatChunk(ctx, id)
	if err == nil {
		arrived(id, nil)
		return false, size, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return false, 0, err
	}
	frame, err := src.GetChunkFrame(ctx, id)
	if errors.Is(err, store.ErrCorrupt) {
		// A source store that checks what it reads (a directory store's packs) refuses a
		// damaged chunk itself: the same as sending it, for what to do next.
		meter.Refused(RefusalReason(err))
		return false, 0, fmt.Errorf("chunk %s from %s: %w: %w", id, src, ErrSourceCorrupt, err)
	}
	if err != nil {
		return false, 0, fmt.Errorf("chunk %s from %s: %w", id, src, err)
	}
	meter.Bytes(int64(len(frame)))
	if _, err := dst.DecodeChunk(h, id, frame, nil); err != nil {
		meter.Refused(RefusalReason(err))
		return false, 0, fmt.Errorf("chunk %s from %s: %w: %w", id, src, ErrSourceCorrupt, err)
	}
	meter.Verified()
	if err := pace.Put(ctx, int64(len(frame)), func() error { return w.PutRaw(ctx, id, frame) }); err != nil {
		return false, 0, err
	}
	arrived(id, frame)
	return true, int64(len(frame)), nil
}

// Staging is where a relay upload puts the manifest first, so the region pulling from the relay
// can start before the upload ends. It is not a published version: gc and listings ignore it.
func StagingKey(id manifest.ID) string { return "staging/" + id.String() }

// Stage writes version v's manifest to dst's staging area, paced by pace (nil: not paced).
func Stage(ctx context.Context, dst *store.Store, v *store.Version, pace *wanrate.Objects) error {
	return pace.Put(ctx, int64(len(v.Encoded)), func() error { return dst.Backend().Put(ctx, StagingKey(v.ID), v.Encoded) })
}

// StagingStatsKey is where a relay upload puts the source's stats of the version, beside its
// staged manifest, so the region pulling can check its room before the upload ends.
func StagingStatsKey(id manifest.ID) string { return "staging/" + id.String() + ".stats.json" }

// StageStats writes the source's stats of version id to dst's staging area.
func StageStats(ctx context.Context, dst *store.Store, id manifest.ID, st store.Stats) error {
	b, _ := json.Marshal(st)
	return dst.Backend().Put(ctx, StagingStatsKey(id), b)
}

// GetStats reads the stats staged with the version (written before its manifest is staged, so
// it does not wait), or those of the version published in the store.
func (w WaitingSource) GetStats(ctx context.Context, id manifest.ID) (store.Stats, error) {
	key := StagingStatsKey(id)
	o, err := w.S.Backend().Stat(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return w.S.GetStats(ctx, id)
	}
	if err != nil {
		return store.Stats{}, err
	}
	if o.Size > store.MaxStatsJSON {
		return store.Stats{}, &store.Error{Kind: store.ErrCorrupt, Store: w.String(), What: key, Err: fmt.Errorf("%d bytes, more than %d", o.Size, store.MaxStatsJSON)}
	}
	b, err := w.S.Backend().Get(ctx, key)
	if err != nil {
		return store.Stats{}, err
	}
	st, err := store.ParseStats(b)
	if err != nil {
		return st, &store.Error{Kind: store.ErrCorrupt, Store: w.String(), What: key, Err: err}
	}
	return st, nil
}

// WaitingSource reads from a store that another process is still filling: the manifest from
// the staging area (or the published one), and chunks as they arrive, polling for each missing
// object until Timeout.
type WaitingSource struct {
	S       *store.Store
	Poll    time.Duration // default 500 ms
	Timeout time.Duration // default 10 minutes
	// Pace, if set, paces the objects read (package wanrate): a chunk is looked for (Stat)
	// until it is there, then its bytes are taken before it is read.
	Pace *wanrate.Objects
}

var _ Source = WaitingSource{}

func (w WaitingSource) String() string { return w.S.String() + " (relay)" }

func (w WaitingSource) GetManifestBytes(ctx context.Context, id manifest.ID) ([]byte, error) {
	return w.wait(ctx, func() ([]byte, error) {
		// The manifest's size is not known before: its bytes are settled once it is in.
		return w.Pace.Get(ctx, 0, func() ([]byte, error) {
			b, err := w.S.Backend().Get(ctx, StagingKey(id))
			if errors.Is(err, store.ErrNotFound) {
				return StoreSource{w.S}.GetManifestBytes(ctx, id)
			}
			return b, err
		})
	})
}

// GetSignature reads the signature without waiting: a relay upload writes it before it stages
// the manifest, so it is there by the time a puller has the manifest, or never.
func (w WaitingSource) GetSignature(ctx context.Context, id manifest.ID) (signing.Signature, error) {
	return w.S.GetSignature(ctx, id)
}

func (w WaitingSource) GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error) {
	if w.Pace == nil {
		return w.wait(ctx, func() ([]byte, error) { return StoreSource{w.S}.GetChunkFrame(ctx, id) })
	}
	// Look for the chunk without taking bytes for it (a chunk the source region has not
	// uploaded yet is asked for many times), then take its size's worth and read it.
	return w.wait(ctx, func() ([]byte, error) {
		size, err := w.S.StatChunk(ctx, id)
		if err != nil {
			return nil, err
		}
		return w.Pace.Get(ctx, size, func() ([]byte, error) { return StoreSource{w.S}.GetChunkFrame(ctx, id) })
	})
}

func (w WaitingSource) wait(ctx context.Context, get func() ([]byte, error)) ([]byte, error) {
	poll, timeout := w.Poll, w.Timeout
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		b, err := get()
		if !errors.Is(err, store.ErrNotFound) || time.Now().After(deadline) {
			return b, err
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Getter reads chunks from a Source for a writer of disks (imageio.Export): each frame is
// decompressed and checked against its id before it is handed over. A terminal's agent deploys
// through it from its region's chunk endpoint.
type Getter struct {
	Src   Source
	codec *store.Codec
}

// NewGetter returns a Getter on src.
func NewGetter(src Source) *Getter { return &Getter{Src: src, codec: store.NewCodec(0)} }

// GetChunk returns chunk id's bytes, decompressed into buf and checked with hash h.
func (g *Getter) GetChunk(ctx context.Context, h manifest.Hash, id manifest.ID, buf []byte) ([]byte, error) {
	frame, err := g.Src.GetChunkFrame(ctx, id)
	if errors.Is(err, store.ErrCorrupt) {
		return nil, fmt.Errorf("chunk %s from %s: %w: %w", id, g.Src, ErrSourceCorrupt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s from %s: %w", id, g.Src, err)
	}
	return decodeChunk(g.codec, g.Src.String(), h, id, frame, buf)
}
