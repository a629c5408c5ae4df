package agentapi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"tms/agentwire"
	"tms/internal/httpdeadline"
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
	bp := s.frameBuf()
	defer s.frameBufs.Put(bp)
	frame, err := s.frameOf(r.Context(), v.ID, id, bp)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Length", strconv.Itoa(len(frame)))
	n, err := w.Write(frame)
	s.Metrics.AddBytes(metrics.PathAgent, metrics.Out, int64(n))
	if err != nil {
		s.writeFailed(r, err)
	}
}

// frames serves the stored frames of many chunks of the deployed (or updated-to) version in one
// answer (agentwire.FramesRequest), so that an agent keeps its link full with a few requests in
// flight instead of one per chunk. Every id is checked to be in the version before anything is
// sent, and frames go out as stored, never decompressed or recompressed here: the agent checks
// each against its id. A frame the store fails to give once the answer has begun cuts the
// connection, and the agent sees the answer end short.
func (s *Server) frames(w http.ResponseWriter, r *http.Request) {
	_, v, err := s.deployTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var req agentwire.FramesRequest
	if err := readJSON(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if len(req.Chunks) == 0 || len(req.Chunks) > agentwire.MaxFramesQuery {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "%d chunk ids in one frames request; want 1 to %d", len(req.Chunks), agentwire.MaxFramesQuery))
		return
	}
	for _, id := range req.Chunks {
		if !v.HasChunk(id) {
			s.reply(w, r, nil, fail(http.StatusNotFound, "chunk %s is not part of version %s", id.Short(), v.ID.Short()))
			return
		}
	}
	if err := s.awaitFrames(r.Context(), v.ID, req.Chunks); err != nil {
		s.reply(w, r, nil, err) // nothing sent yet: the agent asks again after a 503
		return
	}
	bp := s.frameBuf()
	defer s.frameBufs.Put(bp)
	ctx := r.Context()
	var head [manifest.IDLen + 4]byte
	for i, id := range req.Chunks {
		frame, err := s.frameOf(ctx, v.ID, id, bp)
		if err == nil && len(frame) > agentwire.MaxFrame {
			err = &store.Error{Kind: store.ErrCorrupt, Store: s.Store.String(), What: "chunk " + id.String(),
				Err: fmt.Errorf("stored frame of %d bytes, more than the %d of any chunk", len(frame), agentwire.MaxFrame)}
		}
		if err != nil {
			if i == 0 {
				s.reply(w, r, nil, err)
				return
			}
			if !errors.Is(err, context.Canceled) {
				s.log().Error("frames answer cut short", "chunk", id.Short(), "record", i, "err", err)
			}
			panic(http.ErrAbortHandler) // the agent sees the answer end before its last record
		}
		if i == 0 {
			w.Header().Set("Content-Type", agentwire.FramesType)
		}
		copy(head[:], id[:])
		binary.BigEndian.PutUint32(head[manifest.IDLen:], uint32(len(frame)))
		if _, err := w.Write(head[:]); err != nil {
			s.writeFailed(r, err)
			return
		}
		n, err := w.Write(frame)
		s.Metrics.AddBytes(metrics.PathAgent, metrics.Out, int64(n))
		if err != nil {
			s.writeFailed(r, err)
			return
		}
		if i == 0 {
			// The status goes out with the first frame: the agent starts on it at once, and
			// an answer cut later shows as one cut short, not as a connection lost.
			http.NewResponseController(w).Flush()
		}
	}
}

// writeFailed logs an answer the agent stopped taking. One the slow-client guard cut off
// (httpdeadline.ErrStalled) is a warning: an agent starved by many others on one port looks
// like one that reads slowly on purpose, and the admin should see it. One that went away is not.
func (s *Server) writeFailed(r *http.Request, err error) {
	if errors.Is(err, httpdeadline.ErrStalled) {
		s.log().Warn("an agent took its chunks too slowly; its connection was cut", "from", r.RemoteAddr, "err", err)
		return
	}
	s.log().Debug("an agent stopped taking its chunks", "from", r.RemoteAddr, "err", err)
}

// frameBuf returns a buffer for reading chunk frames, from a pool: serving a deploy reads
// thousands of frames, and a buffer per frame would be the largest allocation of each.
func (s *Server) frameBuf() *[]byte {
	if bp, ok := s.frameBufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, agentwire.MaxFrame)
	return &b
}

// readFrame reads chunk id's stored frame, into *bp when the backend can (*bp keeps the
// grown buffer).
func (s *Server) readFrame(ctx context.Context, id manifest.ID, bp *[]byte) ([]byte, error) {
	ig, ok := s.Store.Backend().(store.IntoGetter)
	if !ok {
		return s.Store.Backend().Get(ctx, store.ChunkKey(id))
	}
	frame, err := ig.GetInto(ctx, store.ChunkKey(id), (*bp)[:0])
	if err == nil && cap(frame) <= 2*agentwire.MaxFrame {
		*bp = frame[:0]
	}
	return frame, err
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
	cv, err := c.Get(ctx, s.Store, id)
	if errors.Is(err, store.ErrNotFound) && s.Arrivals != nil {
		// Not here yet: perhaps arriving (arriving.go).
		if acv, _, aerr := s.arriving(id); aerr != nil || acv != nil {
			return acv, aerr
		}
		// A task is prepared only on a version here or arriving, and holds it: one that is
		// neither is between two copies of a share (the region restarted, say), so ask again.
		return nil, &httpError{status: http.StatusServiceUnavailable, retry: true, err: err,
			msg: "version " + id.Short() + " is not in the region yet (a share may still be bringing it); ask again"}
	}
	return cv, err
}
