package agentapi

import (
	"context"
	"fmt"
	"net/http"

	"tms/agentwire"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

// cachedVersion is a version read once for the many requests of its tasks: versions are
// immutable, and reading and checking a 2 GiB image's manifest for every chunk request would
// cost more than serving the chunk.
type cachedVersion struct {
	v      *store.Version
	chunks map[manifest.ID]struct{}
}

func (s *Server) deployTask(r *http.Request) (state.Task, *cachedVersion, error) {
	t, _, err := s.authorize(r)
	if err != nil {
		return t, nil, err
	}
	if t.Kind != agentwire.KindDeploy {
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
	w.Write(v.v.Encoded)
}

// chunk serves one stored chunk frame of the deployed version. The agent checks it against its
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
	if _, ok := v.chunks[id]; !ok || id.IsZero() {
		s.reply(w, r, nil, fail(http.StatusNotFound, "chunk %s is not part of version %s", id.Short(), v.v.ID.Short()))
		return
	}
	frame, err := s.Store.Backend().Get(r.Context(), store.ChunkKey(id))
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Length", fmt.Sprint(len(frame)))
	w.Write(frame)
}

// version reads version id through the cache.
func (s *Server) version(ctx context.Context, id manifest.ID) (*cachedVersion, error) {
	s.mu.Lock()
	cv, ok := s.versions[id]
	s.mu.Unlock()
	if ok {
		return cv, nil
	}
	v, err := s.Store.GetManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	cv = &cachedVersion{v: v, chunks: make(map[manifest.ID]struct{}, len(v.Manifest.Chunks))}
	for _, c := range v.Manifest.Chunks {
		cv.chunks[c] = struct{}{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.versions == nil || len(s.versions) >= 8 {
		s.versions = map[manifest.ID]*cachedVersion{}
	}
	s.versions[id] = cv
	return cv, nil
}
