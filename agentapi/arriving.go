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
// here (from memory, or the store once committed). A copy that failed is waited past for a
// new one, within the same bound.
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
	for {
		f, werr := a.Wait(wctx, id)
		switch {
		case werr == nil && f != nil:
			return f, nil
		case werr == nil:
			return s.readFrame(ctx, id, bp) // committed, or the version published
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(werr, arrival.ErrFailed):
			// Perhaps the share tries another way: wait for its copy within the bound.
			if a = s.nextArrival(wctx, v, a); a == nil {
				if f, err := s.readFrame(ctx, id, bp); err == nil {
					return f, nil // published after all
				}
				return nil, arrivalFailed(werr)
			}
			continue
		case errors.Is(werr, context.DeadlineExceeded):
			return nil, &httpError{status: http.StatusServiceUnavailable, retry: true,
				msg: "chunk " + id.Short() + " of version " + v.Short() + " has not arrived in the region yet (waited " + s.arrivalWait().String() + "); ask again"}
		}
		return nil, werr
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
