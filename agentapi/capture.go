package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"tms/agentwire"
	"tms/manifest"
	"tms/metrics"
	"tms/state"
	"tms/store"
	"tms/transfer"
)

// captureTask authorizes a capture's request and returns its task, claim, description and the
// terminal's disk size as its authenticated boot reported it.
func (s *Server) captureTask(r *http.Request) (state.Task, state.Claim, agentwire.TaskInfo, int64, error) {
	t, c, err := s.authorize(r)
	if err != nil {
		return t, c, agentwire.TaskInfo{}, 0, err
	}
	if t.Kind != agentwire.KindCapture {
		return t, c, agentwire.TaskInfo{}, 0, fail(http.StatusForbidden, "task %s is a %s: it uploads nothing", t.ID, t.Kind)
	}
	term, err := s.Inventory.Terminal(r.Context(), t.MAC)
	if err != nil {
		return t, c, agentwire.TaskInfo{}, 0, err
	}
	if term.DiskSize <= 0 {
		return t, c, agentwire.TaskInfo{}, 0, fail(http.StatusConflict, "terminal %s reported no disk when it booted: there is nothing to capture", t.MAC)
	}
	ti, _, err := s.info(r.Context(), t)
	return t, c, ti, term.DiskSize, err
}

// uploadQuota bounds the compressed bytes one capture of a disk of size bytes may upload: zstd
// frames of incompressible chunks are a little larger than the chunks, and an agent that starts
// over resends what the region had not yet stored.
func uploadQuota(size int64) int64 { return 2*size + agentwire.MaxBatchBytes }

// missing answers which of the named chunks the store lacks.
func (s *Server) missing(w http.ResponseWriter, r *http.Request) {
	if _, _, _, _, err := s.captureTask(r); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var req agentwire.MissingRequest
	if err := readJSON(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if len(req.Chunks) > agentwire.MaxMissingQuery {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "%d chunk ids in one query; at most %d", len(req.Chunks), agentwire.MaxMissingQuery))
		return
	}
	rep := agentwire.MissingReply{Missing: []manifest.ID{}}
	for _, id := range req.Chunks {
		if id.IsZero() {
			continue
		}
		ok, err := s.Store.HasChunk(r.Context(), id)
		if err != nil {
			s.reply(w, r, nil, err)
			return
		}
		if !ok {
			rep.Missing = append(rep.Missing, id)
		}
	}
	s.reply(w, r, rep, nil)
}

// upload stores a batch of chunks after checking each against its id, within the capture's
// quota; the batch is durable before the reply.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	t, _, ti, size, err := s.captureTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	quota := uploadQuota(size)
	s.mu.Lock()
	used := s.uploaded[t.ID]
	s.mu.Unlock()
	if r.ContentLength > quota-used {
		s.Metrics.ChunkRefused(metrics.PathAgent, metrics.ReasonQuota)
		s.reply(w, r, nil, fail(http.StatusRequestEntityTooLarge, "task %s has uploaded %d bytes; a capture of a %d-byte disk may upload at most %d", t.ID, used, size, quota))
		return
	}
	ctx := r.Context()
	cw := s.Store.NewChunkWriter()
	var n, bytes int64
	var buf []byte
	err = agentwire.ReadBatch(http.MaxBytesReader(w, r.Body, min(agentwire.MaxBatchBytes, quota-used)), func(id manifest.ID, frame []byte) error {
		s.Metrics.AddBytes(metrics.PathAgent, metrics.In, int64(len(frame)))
		data, err := s.Store.DecodeChunk(ti.Hash, id, frame, buf)
		if err != nil {
			s.Metrics.ChunkRefused(metrics.PathAgent, transfer.RefusalReason(err))
			return fail(http.StatusBadRequest, "rejected: %v", err)
		}
		buf = data[:0]
		if int64(len(data)) > ti.ChunkSize {
			s.Metrics.ChunkRefused(metrics.PathAgent, metrics.ReasonTooLarge)
			return fail(http.StatusBadRequest, "chunk %s holds %d bytes; this image's chunks hold at most %d", id.Short(), len(data), ti.ChunkSize)
		}
		n++
		bytes += int64(len(frame))
		return cw.PutRaw(ctx, id, frame)
	})
	if err == nil {
		err = cw.Commit(ctx)
	}
	if err != nil {
		cw.Abort()
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, agentwire.ErrBatch):
			err = fail(http.StatusBadRequest, "%v", err)
		case errors.As(err, &mbe):
			s.Metrics.ChunkRefused(metrics.PathAgent, metrics.ReasonQuota)
			err = fail(http.StatusRequestEntityTooLarge, "a chunk batch holds at most %d bytes, and task %s may upload %d more", agentwire.MaxBatchBytes, t.ID, quota-used)
		}
		s.reply(w, r, nil, err)
		return
	}
	for range n {
		s.Metrics.ChunkVerified(metrics.PathAgent)
	}
	s.mu.Lock()
	if s.uploaded == nil {
		s.uploaded = map[string]int64{}
	}
	s.uploaded[t.ID] += bytes
	s.mu.Unlock()
	s.reply(w, r, map[string]int64{"stored": n}, nil)
}

// publish takes a capture's manifest: when every chunk it names is stored, it is kept as a
// version and the task is done; the capture workflow then tags and registers it.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	t, c, ti, size, err := s.captureTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if err := s.settled(t, c); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	limit := manifest.MaxEncodedSizeFor(size)
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if err != nil && !errors.As(err, &mbe) {
		s.reply(w, r, nil, err)
		return
	}
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusRequestEntityTooLarge, "manifest: a capture of a %d-byte disk has a manifest of at most %d bytes: %v", size, limit, err))
		return
	}
	m, err := manifest.DecodeForDisk(b, size)
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "manifest: %v", err))
		return
	}
	if m.DiskSize != size {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "manifest describes a disk of %d bytes; terminal %s reported %d when it booted", m.DiskSize, t.MAC, size))
		return
	}
	res, err := s.Publish(r.Context(), t, c, ti, m)
	s.reply(w, r, res, err)
}

// Publish checks a captured manifest for task t, whose boot claim is c, keeps it as a version
// and finishes the task. It moves no tag: the capture workflow tags the version once the task is
// done, so a task that fails (a rival claimed its boot) leaves no trace an admin would deploy.
func (s *Server) Publish(ctx context.Context, t state.Task, c state.Claim, ti agentwire.TaskInfo, m *manifest.Manifest) (agentwire.Result, error) {
	if err := s.settled(t, c); err != nil {
		return agentwire.Result{}, err
	}
	if m.Meta.Name != ti.Image {
		return agentwire.Result{}, fail(http.StatusBadRequest, "manifest names image %q; task %s captures %q", m.Meta.Name, t.ID, ti.Image)
	}
	if m.Hash != ti.Hash || m.ChunkSize != ti.ChunkSize {
		return agentwire.Result{}, fail(http.StatusBadRequest, "manifest uses %s chunks of %d bytes; task %s needs %s chunks of %d bytes",
			m.Hash, m.ChunkSize, t.ID, ti.Hash, ti.ChunkSize)
	}
	lock, err := s.Store.LockShared(ctx, "capture "+t.ID, nil)
	if err != nil {
		return agentwire.Result{}, err
	}
	defer lock.Release(context.WithoutCancel(ctx))
	var parent *store.Version
	if id, err := s.Store.GetTag(ctx, ti.Image, manifest.DefaultTag); err == nil {
		if parent, err = s.Store.GetManifest(ctx, id); err != nil {
			return agentwire.Result{}, err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return agentwire.Result{}, err
	}
	var st store.Stats
	var missing []manifest.ID
	seen := make(map[manifest.ID]bool, len(m.Chunks))
	for _, id := range m.Chunks {
		if id.IsZero() || seen[id] {
			continue
		}
		seen[id] = true
		size, err := s.Store.StatChunk(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			missing = append(missing, id)
			continue
		}
		if err != nil {
			return agentwire.Result{}, err
		}
		st.StoredBytes += size
	}
	if len(missing) > 0 {
		return agentwire.Result{}, &httpError{status: http.StatusConflict, retry: true,
			msg: fmt.Sprintf("%d chunks of the manifest are not stored (first %s): upload them, then the manifest", len(missing), missing[0].Short())}
	}
	name := t.MAC
	if term, err := s.Inventory.Terminal(ctx, t.MAC); err == nil && term.Name != "" {
		name = term.Name
	}
	m.Format = manifest.Format
	m.Meta.Created = s.now().UTC().Truncate(time.Second)
	m.Meta.Source = "capture:" + name
	m.Parent = manifest.ID{}
	var v *store.Version
	if parent != nil && sameDisk(parent.Manifest, m) {
		v = parent // nothing changed since the last capture
	} else {
		if parent != nil {
			m.Parent = parent.ID
		}
		enc, err := manifest.Encode(m)
		if err != nil {
			return agentwire.Result{}, fail(http.StatusBadRequest, "manifest: %v", err)
		}
		s.mu.Lock()
		st.AddedBytes = s.uploaded[t.ID]
		s.mu.Unlock()
		if v, err = s.Store.PutVersion(ctx, enc, st); err != nil {
			return agentwire.Result{}, err
		}
		if err := lock.Err(); err != nil {
			return agentwire.Result{}, fmt.Errorf("publishing %s: %w", t.ID, err)
		}
	}
	res := agentwire.Result{Version: v.ID.String(), DiskSize: m.DiskSize, StoredBytes: st.StoredBytes, Chunks: int64(len(m.Chunks))}
	ft, err := s.finish(ctx, t, state.TaskDone, res, "")
	if err != nil {
		return res, err
	}
	if ft.State != state.TaskDone {
		// The task ended another way first (a rival, a cancel): this capture is not its outcome.
		return agentwire.Result{}, fail(http.StatusConflict, "task %s is already %s: %s", t.ID, ft.State, ft.Error)
	}
	s.log().Info("capture kept", "task", t.ID, "image", ti.Image, "version", v.ID.Short(), "stored_bytes", st.StoredBytes)
	return res, nil
}

func sameDisk(a, b *manifest.Manifest) bool {
	if a.Hash != b.Hash || a.DiskSize != b.DiskSize || a.ChunkSize != b.ChunkSize || len(a.Chunks) != len(b.Chunks) {
		return false
	}
	for i := range a.Chunks {
		if a.Chunks[i] != b.Chunks[i] {
			return false
		}
	}
	return true
}
