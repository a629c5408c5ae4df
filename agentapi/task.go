package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"tms/agentwire"
	"tms/imageio"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

// info is the task's description for its agent.
func (s *Server) info(ctx context.Context, t state.Task) (agentwire.TaskInfo, *store.CachedVersion, error) {
	ti := agentwire.TaskInfo{ID: t.ID, Kind: t.Kind}
	switch t.Kind {
	case agentwire.KindDeploy, agentwire.KindUpdate:
		id, err := manifest.ParseID(t.Version)
		if err != nil {
			return ti, nil, fmt.Errorf("task %s names version %q: %w", t.ID, t.Version, err)
		}
		v, err := s.version(ctx, id)
		if err != nil {
			return ti, nil, fmt.Errorf("version %s of task %s: %w", id.Short(), t.ID, err)
		}
		m := v.Manifest
		ti.Version, ti.Image, ti.DiskSize, ti.ChunkSize, ti.Hash = id.String(), m.Meta.Name, m.DiskSize, m.ChunkSize, m.Hash
		ti.Base = t.Base
		return ti, v, nil
	case agentwire.KindCapture:
		ti.Image, ti.ChunkSize, ti.Hash = t.Image, imageio.DefaultChunkSize, manifest.DefaultHash
		id, err := s.Store.GetTag(ctx, t.Image, manifest.DefaultTag)
		if errors.Is(err, store.ErrNotFound) {
			return ti, nil, nil
		}
		if err != nil {
			return ti, nil, err
		}
		v, err := s.version(ctx, id)
		if err != nil {
			return ti, nil, fmt.Errorf("current version of %s: %w", t.Image, err)
		}
		ti.ChunkSize, ti.Hash = v.Manifest.ChunkSize, v.Manifest.Hash
		return ti, v, nil
	case agentwire.KindProbe:
		// The version of the in-memory OS the probe's boot script named.
		ti.Version = t.Version
		return ti, nil, nil
	}
	return ti, nil, fmt.Errorf("task %s has kind %q", t.ID, t.Kind)
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	t, _, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	ti, _, err := s.info(r.Context(), t)
	if err == nil && ti.Kind.Writes() {
		err = s.addSignature(r.Context(), &ti)
	}
	if err == nil {
		ti.Swarm, err = s.swarmFor(r.Context(), t)
	}
	ti.Servers = s.servers(r.Context())
	if err == nil && ti.Kind.Writes() {
		// The agent writes once it has read its task: from now until the task ends verified
		// (FinishTask records the version then), nobody knows what the disk holds.
		err = s.Inventory.MarkVersionUnknown(r.Context(), t.MAC, fmt.Sprintf("task %s (%s) began writing the disk at %s and has not finished verified",
			t.ID, t.Kind, s.now().UTC().Format(time.DateTime+" UTC")))
	}
	s.reply(w, r, ti, err)
}

// addSignature gives a deploy's agent central's signature of the version, which it checks
// before it writes anything. A version without one goes out unsigned and the agent refuses
// it. (Only the task request carries it, so chunk requests cost no extra store read.)
func (s *Server) addSignature(ctx context.Context, ti *agentwire.TaskInfo) error {
	id, err := manifest.ParseID(ti.Version)
	if err != nil {
		return err
	}
	sig, err := s.Store.GetSignature(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signature of version %s: %w", id.Short(), err)
	}
	ti.Signature, ti.Signer = sig.Signature, sig.KeyID
	if ti.Base == "" {
		return nil
	}
	// An update's base: its signature too, if the region has one (the agent checks it then).
	base, err := manifest.ParseID(ti.Base)
	if err != nil {
		return err
	}
	sig, err = s.Store.GetSignature(ctx, base)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signature of base version %s: %w", base.Short(), err)
	}
	ti.BaseSignature, ti.BaseSigner = sig.Signature, sig.KeyID
	return nil
}

// finish ends task t and tells its waiting activity, once.
func (s *Server) finish(ctx context.Context, t state.Task, st state.TaskState, res agentwire.Result, msg string) (state.Task, error) {
	var result string
	if st == state.TaskDone {
		b, _ := json.Marshal(res)
		result = string(b)
	}
	t, changed, err := s.Inventory.FinishTask(ctx, t.ID, st, result, msg, s.now())
	if err != nil {
		return t, err
	}
	s.mu.Lock()
	delete(s.uploaded, t.ID)
	s.mu.Unlock()
	s.forget(t.MAC)
	if changed && s.Waiters != nil {
		if err := s.Waiters.Complete(context.WithoutCancel(ctx), t); err != nil {
			// The activity reads the outcome from the database when it next starts.
			s.log().Warn("could not complete the task's waiting activity", "task", t.ID, "err", err)
		}
	}
	return t, nil
}

func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	t, _, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var p agentwire.Progress
	if err := readJSON(r, &p); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if !p.Phase.Known() || p.Done < 0 || p.Total < 0 || p.Done > p.Total || p.MovedBytes < 0 || p.SentBytes < 0 || p.FetchedBytes < 0 {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "progress %+v: want a known phase, 0 <= done <= total and no negative byte counts", p))
		return
	}
	p.FillBytes(t.Kind)
	b, _ := json.Marshal(p)
	t, err = s.Inventory.ReportProgress(r.Context(), t.ID, string(b), s.now())
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if s.Waiters != nil {
		if err := s.Waiters.Heartbeat(r.Context(), t); err != nil {
			s.log().Debug("progress not passed on as a heartbeat", "task", t.ID, "err", err)
		}
	}
	s.reply(w, r, map[string]state.TaskState{"state": t.State}, nil)
}

func (s *Server) done(w http.ResponseWriter, r *http.Request) {
	t, c, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var d agentwire.Done
	if err := readJSON(r, &d); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	res, err := s.Done(r.Context(), t, c, d)
	s.reply(w, r, res, err)
}

// Done records the end an agent reports for task t, whose boot claim is c. A success is taken
// only once the claim has settled (Server.Quiet).
func (s *Server) Done(ctx context.Context, t state.Task, c state.Claim, d agentwire.Done) (agentwire.Result, error) {
	name := t.MAC
	if d.Error != "" {
		msg := d.Error
		if len(msg) > 2048 {
			msg = msg[:2048]
		}
		_, err := s.finish(ctx, t, state.TaskFailed, agentwire.Result{}, "terminal "+name+": "+msg)
		return agentwire.Result{}, err
	}
	if t.Kind == agentwire.KindCapture {
		return agentwire.Result{}, fail(http.StatusBadRequest, "a capture ends by publishing its manifest, or by reporting an error")
	}
	if t.Kind == agentwire.KindProbe {
		return s.probed(ctx, t, c, d)
	}
	if d.Written < 0 || d.WrittenBytes < 0 || d.Skipped < 0 || d.FetchedBytes < 0 {
		return agentwire.Result{}, fail(http.StatusBadRequest, "negative counts in %+v", d)
	}
	if err := s.settled(t, c); err != nil {
		return agentwire.Result{}, err
	}
	if !d.Verified {
		_, err := s.finish(ctx, t, state.TaskFailed, agentwire.Result{}, "terminal "+name+" wrote the image but did not verify it")
		return agentwire.Result{}, err
	}
	res := agentwire.Result{Version: t.Version, Written: d.Written, WrittenBytes: d.WrittenBytes, Skipped: d.Skipped, Verified: true, FetchedBytes: d.FetchedBytes}
	_, err := s.finish(ctx, t, state.TaskDone, res, "")
	return res, err
}

// probed records what a probe's agent reported: the in-memory OS version it booted and its
// own release. The task succeeds whatever they are; the rollout that asked compares them.
func (s *Server) probed(ctx context.Context, t state.Task, c state.Claim, d agentwire.Done) (agentwire.Result, error) {
	if d.BootEnv != "" {
		if _, err := manifest.ParseID(d.BootEnv); err != nil {
			return agentwire.Result{}, fail(http.StatusBadRequest, "probe: bootenv %.80q is not a version id", d.BootEnv)
		}
	}
	if len(d.AgentVersion) > agentwire.MaxAgentVersion {
		return agentwire.Result{}, fail(http.StatusBadRequest, "probe: agent version of %d bytes, at most %d", len(d.AgentVersion), agentwire.MaxAgentVersion)
	}
	if err := s.settled(t, c); err != nil {
		return agentwire.Result{}, err
	}
	res := agentwire.Result{Version: t.Version, BootEnv: d.BootEnv, AgentVersion: d.AgentVersion}
	_, err := s.finish(ctx, t, state.TaskDone, res, "")
	return res, err
}
