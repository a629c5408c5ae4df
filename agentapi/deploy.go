package agentapi

import (
	"context"
	"fmt"
	"net/http"

	"tms/agentwire"
	"tms/manifest"
	"tms/metrics"
	"tms/state"
	"tms/store"
)

func (s *Server) deployTask(r *http.Request) (state.Task, *store.CachedVersion, error) {
	t, _, err := s.authorize(r)
	if err != nil {
		return t, nil, err
	}
	if !t.Kind.Writes() {
		return t, nil, fail(http.StatusForbidden, "task %s is a %s: it reads no image", t.ID, t.Kind)
	}
	_, v, err := s.info(r.Context(), t)
	return t, v, err
}

func (s *Server) manifest(w http.ResponseWriter, r *http.Request) {
	_, v, err := s.deployTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(v.Encoded)
}

// base serves an update's agent the manifest of the version its disk holds, which it diffs
// against the version it writes (it recomputes the id from the bytes).
func (s *Server) base(w http.ResponseWriter, r *http.Request) {
	t, _, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if t.Kind != agentwire.KindUpdate {
		s.reply(w, r, nil, fail(http.StatusForbidden, "task %s is a %s: it has no base version", t.ID, t.Kind))
		return
	}
	id, err := manifest.ParseID(t.Base)
	if err != nil {
		s.reply(w, r, nil, fmt.Errorf("task %s names base version %q: %w", t.ID, t.Base, err))
		return
	}
	v, err := s.version(r.Context(), id)
	if err != nil {
		s.reply(w, r, nil, fmt.Errorf("base version %s of task %s: %w", id.Short(), t.ID, err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(v.Encoded)
}

// chunk serves one stored chunk frame of the deployed (or updated-to) version. The agent checks it against its
// id, so a region does not spend a decompression per terminal on it.
func (s *Server) chunk(w http.ResponseWriter, r *http.Request) {
	_, v, err := s.deployTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	id, err := manifest.ParseID(r.PathValue("chunk"))
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "chunk id: %v", err))
		return
	}
	if !v.HasChunk(id) {
		s.reply(w, r, nil, fail(http.StatusNotFound, "chunk %s is not part of version %s", id.Short(), v.ID.Short()))
		return
	}
	frame, err := s.Store.Backend().Get(r.Context(), store.ChunkKey(id))
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Length", fmt.Sprint(len(frame)))
	n, _ := w.Write(frame)
	s.Metrics.AddBytes(metrics.PathAgent, metrics.Out, int64(n))
}

// maxCachedVersions bounds the versions the API keeps read: a region deploys a few at a time,
// and a big image's manifest and chunk set take megabytes.
const maxCachedVersions = 8

// version reads version id once for the many requests of its tasks: versions are immutable, and
// reading and checking a 2 GiB image's manifest for every chunk request would cost more than
// serving the chunk.
func (s *Server) version(ctx context.Context, id manifest.ID) (*store.CachedVersion, error) {
	s.mu.Lock()
	if s.versions == nil {
		s.versions = &store.VersionCache{Size: maxCachedVersions}
	}
	c := s.versions
	s.mu.Unlock()
	return c.Get(ctx, s.Store, id)
}
