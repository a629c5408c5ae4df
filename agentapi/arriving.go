package agentapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"tms/arrival"
	"tms/manifest"
	"tms/store"
)

// Serving a version while it arrives (package arrival, docs/sharing.md): a deploy may start
// while a share still copies its version into the region's store. The task's version is then
// the arriving one, its manifest checked against its id and central's signature verified by
// the region; a chunk not here yet is waited for, at most ArrivalWait per chunk (less than the
// agent's idle cut of 30 s), and the agent asks again after a retryable 503 if it still is not
// here. A copy that fails ends its arrival, but not the share: ShareImage may bring the version
// another way (the next source, the relay), which begins a new arrival that the same waits
// pick up. Until then the answer is a retryable 503 naming why the copy failed; a share that
// fails for good fails the deploy, which cancels the terminals' tasks. The agent checks every
// chunk against its id, whatever the region serves.

// DefaultArrivalWait is how long a request waits for one chunk of an arriving version.
const DefaultArrivalWait = 20 * time.Second

// maxArrivingVersions bounds the arriving versions whose chunk sets the API keeps.
const maxArrivingVersions = 8

type arrivingVersion struct {
	a  *arrival.Arrival
	cv *store.CachedVersion
}

func (s *Server) arrivalWait() time.Duration {
	if s.ArrivalWait > 0 {
		return s.ArrivalWait
	}
	return DefaultArrivalWait
}

// arriving returns version id as it arrives, and its arrival; nil if it is not arriving. A
// copy that failed, with no other under way yet, is a retryable error naming its reason.
func (s *Server) arriving(id manifest.ID) (*store.CachedVersion, *arrival.Arrival, error) {
	a := s.Arrivals.Get(id)
	if a == nil {
		return nil, nil, nil
	}
	if err := a.Err(); err != nil {
		return nil, nil, arrivalFailed(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.arrivingVersions[id]; ok && e.a == a {
		return e.cv, a, nil
	}
	if s.arrivingVersions == nil {
		s.arrivingVersions = map[manifest.ID]arrivingVersion{}
	}
	if len(s.arrivingVersions) >= maxArrivingVersions {
		for k, e := range s.arrivingVersions {
			select {
			case <-e.a.Done():
				delete(s.arrivingVersions, k)
			default:
			}
		}
		if len(s.arrivingVersions) >= maxArrivingVersions {
			clear(s.arrivingVersions)
		}
	}
	cv := store.NewCachedVersion(a.Version())
	s.arrivingVersions[id] = arrivingVersion{a: a, cv: cv}
	return cv, a, nil
}

func arrivalFailed(err error) error {
	return &httpError{status: http.StatusServiceUnavailable, retry: true, err: err,
		msg: "the copy bringing this image to the region failed (" + err.Error() + "); tms may bring it another way: ask again"}
}

// frameOf reads chunk id of version v: from the store, or, while v arrives, as soon as it is
// here (from memory, or the store once committed), waiting at most ArrivalWait.
func (s *Server) frameOf(ctx context.Context, v manifest.ID, id manifest.ID, bp *[]byte) ([]byte, error) {
	frame, err := s.readFrame(ctx, id, bp)
	if !errors.Is(err, store.ErrNotFound) || s.Arrivals == nil {
		return frame, err
	}
	a := s.Arrivals.Get(v)
	if a == nil {
		return frame, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.arrivalWait())
	defer cancel()
	f, err := s.awaitChunk(ctx, wctx, a, v, id)
	if err != nil || f != nil {
		return f, err
	}
	return s.readFrame(ctx, id, bp) // committed, or the version published
}

// awaitFrames waits, all within one ArrivalWait, until every chunk of ids is here while
// version v arrives: a frames answer cannot stop half-way to wait (the agent reads a cut
// answer as a failure), so it begins only when it can be given whole. Nothing to wait for
// when v is not arriving.
func (s *Server) awaitFrames(ctx context.Context, v manifest.ID, ids []manifest.ID) error {
	a := s.Arrivals.Get(v)
	if a == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.arrivalWait())
	defer cancel()
	for _, id := range ids {
		if a.Has(id) {
			continue
		}
		if _, err := s.Store.StatChunk(ctx, id); err == nil {
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if _, err := s.awaitChunk(ctx, wctx, a, v, id); err != nil {
			return err
		}
	}
	return nil
}

// awaitChunk waits until wctx ends for chunk id of version v to arrive (through a, or the next
// arrival of v if a's copy fails): its frame from memory, or nil when it is in the store.
func (s *Server) awaitChunk(ctx, wctx context.Context, a *arrival.Arrival, v, id manifest.ID) ([]byte, error) {
	for {
		f, err := a.Wait(wctx, id)
		switch {
		case err == nil:
			return f, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, arrival.ErrFailed):
			// Perhaps the share tries another way: wait for its copy within the bound.
			if a = s.nextArrival(wctx, v, a); a == nil {
				if _, serr := s.Store.StatChunk(ctx, id); serr == nil {
					return nil, nil // here after all
				}
				return nil, arrivalFailed(err)
			}
		case errors.Is(err, context.DeadlineExceeded):
			return nil, &httpError{status: http.StatusServiceUnavailable, retry: true,
				msg: "chunk " + id.Short() + " of version " + v.Short() + " has not arrived in the region yet (waited " + s.arrivalWait().String() + "); ask again"}
		default:
			return nil, err
		}
	}
}

// nextArrival waits, until ctx ends, for an arrival of version v other than failed; nil if none
// came.
func (s *Server) nextArrival(ctx context.Context, v manifest.ID, failed *arrival.Arrival) *arrival.Arrival {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if a := s.Arrivals.Get(v); a != nil && a != failed {
			return a
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
