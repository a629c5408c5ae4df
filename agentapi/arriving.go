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
// here. A share that fails ends every wait with its reason (424: the agent fails its task with
// it). The agent checks every chunk against its id, whatever the region serves.

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

// arriving returns version id as it arrives, and its arrival; nil if it is not arriving. An
// arrival that failed is an error naming the share's reason.
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
	return &httpError{status: http.StatusFailedDependency, msg: "the share bringing this image to the region failed: " + err.Error(), err: err}
}

// frameOf reads chunk id of version v: from the store, or, while v arrives, as soon as it is
// here (from memory, or the store once committed).
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
	f, werr := a.Wait(wctx, id)
	switch {
	case werr == nil && f != nil:
		return f, nil
	case werr == nil:
		return s.readFrame(ctx, id, bp) // committed, or the version published
	case errors.Is(werr, arrival.ErrFailed):
		return nil, arrivalFailed(werr)
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(werr, context.DeadlineExceeded):
		return nil, &httpError{status: http.StatusServiceUnavailable, retry: true,
			msg: "chunk " + id.Short() + " of version " + v.Short() + " has not arrived in the region yet (waited " + s.arrivalWait().String() + "); ask again"}
	}
	return nil, werr
}
