// Package agentapi is a region's HTTP API for the agents of its terminals: the region's side of
// the protocol package agent speaks.
//
// An agent's boot gets it its boot action and, for a capture or deploy, a token minted for that
// boot (the one before it stops working). Task requests carry the token and the terminal's MAC;
// they reach only the terminal's current task and, for a deploy, only the chunks of the version
// it writes. Chunks an agent uploads are checked against their ids before they are stored, and a
// captured version is published only when every chunk it names is in the store. Progress reports
// become heartbeats of the task's WaitForAgent activity; the outcome completes it.
//
//	api := &agentapi.Server{Inventory: inv, Store: st, Waiters: activities.AgentWaiters{Client: c}}
//	api.Routes(mux)
package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"tms/agent"
	"tms/imageio"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

// Waiters hears what agents report about their tasks: progress (a heartbeat of the waiting
// activity) and the end of a task (its completion).
type Waiters interface {
	Heartbeat(ctx context.Context, t state.Task) error
	Complete(ctx context.Context, t state.Task) error
}

// Server is a region's agent API.
type Server struct {
	Inventory *state.Inventory
	Store     *store.Store
	Waiters   Waiters // may be nil
	Log       *slog.Logger
	Now       func() time.Time
	// RequireBootToken gives a task only to an agent that presents the token its boot script
	// carried (network boot, where the boot service mints it for one boot behind a secret).
	// Without it, any boot request for the terminal's MAC gets a fresh token: fine for
	// simulated terminals on one machine, not on a classroom network.
	RequireBootToken bool

	mu       sync.Mutex
	boxes    map[string]*mailbox
	versions map[manifest.ID]*cachedVersion
	auth     map[authKey]authEntry
	uploaded map[string]int64 // compressed bytes uploaded per capture task
}

// CommandTTL is how long a command waits for a terminal's agent to poll: a reboot asked for
// while nothing listens must not fire an hour later.
const CommandTTL = 2 * time.Minute

// authTTL is how long a checked token is trusted without asking the database again, so the
// chunk requests of a deploy do not each cost three queries.
const authTTL = 2 * time.Second

type authKey struct{ mac, token string }

// cachedVersion is a version read once for the many requests of its tasks: versions are
// immutable, and reading and checking a 2 GiB image's manifest for every chunk request would
// cost more than serving the chunk.
type cachedVersion struct {
	v      *store.Version
	chunks map[manifest.ID]struct{}
}

type authEntry struct {
	task  state.Task
	until time.Time
}

type mailbox struct {
	cmd      string
	at       time.Time
	wake     chan struct{}
	polling  int
	lastPoll time.Time
	lastSeen time.Time
}

// Routes registers the API's handlers on mux.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/agent/boot", s.boot)
	mux.HandleFunc("GET /v1/agent/commands", s.commands)
	mux.HandleFunc("GET /v1/agent/task", s.task)
	mux.HandleFunc("GET /v1/agent/task/manifest", s.manifest)
	mux.HandleFunc("GET /v1/agent/task/chunks/{chunk}", s.chunk)
	mux.HandleFunc("POST /v1/agent/task/missing", s.missing)
	mux.HandleFunc("POST /v1/agent/task/chunks", s.upload)
	mux.HandleFunc("PUT /v1/agent/task/manifest", s.publish)
	mux.HandleFunc("POST /v1/agent/task/progress", s.progress)
	mux.HandleFunc("POST /v1/agent/task/done", s.done)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// httpError is an error with the status it is answered with.
type httpError struct {
	status int
	msg    string
	retry  bool
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err == nil {
		json.NewEncoder(w).Encode(v)
		return
	}
	he, ok := err.(*httpError)
	switch {
	case ok:
	case errors.Is(err, context.Canceled):
		return // the agent went away
	case errors.Is(err, store.ErrNotFound):
		he = &httpError{status: http.StatusNotFound, msg: err.Error()}
	default:
		s.log().Error("agent request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		he = &httpError{status: http.StatusInternalServerError, msg: "region: " + err.Error(), retry: true}
	}
	if he.status >= 500 {
		he.retry = true
	}
	w.WriteHeader(he.status)
	json.NewEncoder(w).Encode(agent.Error{Error: he.msg, Retry: he.retry})
}

func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, agentMaxJSON+1))
	if err != nil {
		return err
	}
	if len(b) > agentMaxJSON {
		return fail(http.StatusRequestEntityTooLarge, "request body is over %d bytes", agentMaxJSON)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fail(http.StatusBadRequest, "request body is not valid JSON for this request: %v", err)
	}
	return nil
}

const agentMaxJSON = 1 << 20

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// boot records the terminal and its disk and answers its boot action. A capture or deploy that
// has not finished gets a fresh token; the previous boot's token stops working.
func (s *Server) boot(w http.ResponseWriter, r *http.Request) {
	var req agent.BootRequest
	if err := readJSON(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	rep, err := s.Boot(r.Context(), req, remoteIP(r))
	s.reply(w, r, rep, err)
}

// Boot is the boot request's work: what a terminal that just started is to do.
func (s *Server) Boot(ctx context.Context, req agent.BootRequest, ip string) (agent.BootReply, error) {
	mac, err := state.NormalizeMAC(req.MAC)
	if err != nil {
		return agent.BootReply{}, fail(http.StatusBadRequest, "%v", err)
	}
	if req.DiskSize < 0 || len(req.Disk) > 4096 {
		return agent.BootReply{}, fail(http.StatusBadRequest, "disk %q of %d bytes is not a disk", req.Disk, req.DiskSize)
	}
	now := s.now()
	if err := s.Inventory.Seen(ctx, mac, ip, now); err != nil {
		return agent.BootReply{}, err
	}
	if err := s.Inventory.SetDisk(ctx, mac, req.Disk, req.DiskSize); err != nil {
		return agent.BootReply{}, err
	}
	a, err := s.Inventory.BootAction(ctx, mac, now)
	if err != nil {
		return agent.BootReply{}, err
	}
	local := agent.BootReply{Action: "local"}
	if a.Action == "local" || a.Task == "" {
		return local, nil
	}
	t, err := s.Inventory.Task(ctx, a.Task)
	if errors.Is(err, store.ErrNotFound) {
		return local, nil
	}
	if err != nil {
		return agent.BootReply{}, err
	}
	if t.Finished() || t.MAC != mac {
		return local, nil
	}
	if req.BootToken != "" {
		ok, err := s.Inventory.CheckToken(ctx, mac, t.ID, req.BootToken, now)
		if err != nil {
			return agent.BootReply{}, err
		}
		if ok {
			s.log().Info("terminal booted into a task", "mac", mac, "task", t.ID, "kind", t.Kind, "agent", req.AgentVersion)
			return agent.BootReply{Action: a.Action, Task: t.ID, Token: req.BootToken}, nil
		}
	}
	if s.RequireBootToken {
		s.log().Warn("boot request without this boot's token: the terminal boots its own disk", "mac", mac, "task", t.ID, "remote", ip)
		return local, nil
	}
	token := state.NewToken()
	if err := s.Inventory.SetBootAction(ctx, mac, a, token); err != nil {
		return agent.BootReply{}, err
	}
	s.forget(mac)
	s.log().Info("terminal booted into a task", "mac", mac, "task", t.ID, "kind", t.Kind, "agent", req.AgentVersion)
	return agent.BootReply{Action: a.Action, Task: t.ID, Token: token}, nil
}

// forget drops the checked tokens of a terminal.
func (s *Server) forget(mac string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.auth {
		if k.mac == mac {
			delete(s.auth, k)
		}
	}
}

// authorize checks a task request's terminal and token and returns the task they open, which
// must not have finished.
func (s *Server) authorize(r *http.Request) (state.Task, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	rawMAC := r.Header.Get(agent.TerminalHeader)
	if !ok || tok == "" || rawMAC == "" {
		return state.Task{}, fail(http.StatusUnauthorized, "a task request needs the %s header and the boot's bearer token", agent.TerminalHeader)
	}
	mac, err := state.NormalizeMAC(rawMAC)
	if err != nil {
		return state.Task{}, fail(http.StatusBadRequest, "%s: %v", agent.TerminalHeader, err)
	}
	now := s.now()
	key := authKey{mac, tok}
	s.mu.Lock()
	e, hit := s.auth[key]
	s.mu.Unlock()
	if hit && now.Before(e.until) {
		return e.task, nil
	}
	ctx := r.Context()
	a, err := s.Inventory.BootAction(ctx, mac, now)
	if err != nil {
		return state.Task{}, err
	}
	denied := fail(http.StatusForbidden, "the token does not open a task of terminal %s (it may belong to an earlier boot)", mac)
	if a.Task == "" {
		return state.Task{}, denied
	}
	if ok, err := s.Inventory.CheckToken(ctx, mac, a.Task, tok, now); err != nil {
		return state.Task{}, err
	} else if !ok {
		return state.Task{}, denied
	}
	t, err := s.Inventory.Task(ctx, a.Task)
	if errors.Is(err, store.ErrNotFound) || err == nil && t.MAC != mac {
		return state.Task{}, denied
	}
	if err != nil {
		return state.Task{}, err
	}
	if t.Finished() {
		return state.Task{}, fail(http.StatusConflict, "task %s is already %s", t.ID, t.State)
	}
	s.mu.Lock()
	if s.auth == nil || len(s.auth) > 4096 {
		s.auth = map[authKey]authEntry{}
	}
	s.auth[key] = authEntry{task: t, until: now.Add(authTTL)}
	s.mu.Unlock()
	return t, nil
}

// info is the task's description for its agent.
func (s *Server) info(ctx context.Context, t state.Task) (agent.TaskInfo, *cachedVersion, error) {
	ti := agent.TaskInfo{ID: t.ID, Kind: t.Kind}
	switch t.Kind {
	case "deploy":
		id, err := manifest.ParseID(t.Image)
		if err != nil {
			return ti, nil, fmt.Errorf("task %s names version %q: %w", t.ID, t.Image, err)
		}
		v, err := s.version(ctx, id)
		if err != nil {
			return ti, nil, fmt.Errorf("version %s of task %s: %w", id.Short(), t.ID, err)
		}
		m := v.v.Manifest
		ti.Version, ti.Image, ti.DiskSize, ti.ChunkSize, ti.Hash = id.String(), m.Meta.Name, m.DiskSize, m.ChunkSize, m.Hash
		return ti, v, nil
	case "capture":
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
		ti.ChunkSize, ti.Hash = v.v.Manifest.ChunkSize, v.v.Manifest.Hash
		return ti, v, nil
	}
	return ti, nil, fmt.Errorf("task %s has kind %q", t.ID, t.Kind)
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	t, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	ti, _, err := s.info(r.Context(), t)
	s.reply(w, r, ti, err)
}

func (s *Server) deployTask(r *http.Request) (state.Task, *cachedVersion, error) {
	t, err := s.authorize(r)
	if err != nil {
		return t, nil, err
	}
	if t.Kind != "deploy" {
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

func (s *Server) captureTask(r *http.Request) (state.Task, agent.TaskInfo, error) {
	t, err := s.authorize(r)
	if err != nil {
		return t, agent.TaskInfo{}, err
	}
	if t.Kind != "capture" {
		return t, agent.TaskInfo{}, fail(http.StatusForbidden, "task %s is a %s: it uploads nothing", t.ID, t.Kind)
	}
	ti, _, err := s.info(r.Context(), t)
	return t, ti, err
}

// missing answers which of the named chunks the store lacks.
func (s *Server) missing(w http.ResponseWriter, r *http.Request) {
	_, _, err := s.captureTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var req agent.MissingRequest
	if err := readJSON(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if len(req.Chunks) > agent.MaxMissingQuery {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "%d chunk ids in one query; at most %d", len(req.Chunks), agent.MaxMissingQuery))
		return
	}
	rep := agent.MissingReply{Missing: []manifest.ID{}}
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

// upload stores a batch of chunks after checking each against its id; the batch is durable
// before the reply.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	t, ti, err := s.captureTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	ctx := r.Context()
	cw := s.Store.NewChunkWriter()
	var n, bytes int64
	var buf []byte
	err = agent.ReadBatch(http.MaxBytesReader(w, r.Body, agent.MaxBatchBytes), func(id manifest.ID, frame []byte) error {
		data, err := s.Store.DecodeChunk(ti.Hash, id, frame, buf)
		if err != nil {
			return fail(http.StatusBadRequest, "rejected: %v", err)
		}
		buf = data[:0]
		if int64(len(data)) > ti.ChunkSize {
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
		case errors.Is(err, agent.ErrBatch):
			err = fail(http.StatusBadRequest, "%v", err)
		case errors.As(err, &mbe):
			err = fail(http.StatusRequestEntityTooLarge, "a chunk batch holds at most %d bytes", agent.MaxBatchBytes)
		}
		s.reply(w, r, nil, err)
		return
	}
	s.mu.Lock()
	if s.uploaded == nil {
		s.uploaded = map[string]int64{}
	}
	s.uploaded[t.ID] += bytes
	s.mu.Unlock()
	s.reply(w, r, map[string]int64{"stored": n}, nil)
}

// publish takes a capture's manifest: when every chunk it names is stored, it becomes the
// image's new version (tagged latest) and the task is done.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	t, ti, err := s.captureTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, manifest.MaxEncodedSize))
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusRequestEntityTooLarge, "manifest: %v", err))
		return
	}
	m, err := manifest.Decode(b)
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "manifest: %v", err))
		return
	}
	res, err := s.Publish(r.Context(), t, ti, m)
	s.reply(w, r, res, err)
}

// Publish checks and publishes a captured manifest for task t and finishes the task.
func (s *Server) Publish(ctx context.Context, t state.Task, ti agent.TaskInfo, m *manifest.Manifest) (agent.Result, error) {
	if m.Meta.Name != ti.Image {
		return agent.Result{}, fail(http.StatusBadRequest, "manifest names image %q; task %s captures %q", m.Meta.Name, t.ID, ti.Image)
	}
	if m.Hash != ti.Hash || m.ChunkSize != ti.ChunkSize {
		return agent.Result{}, fail(http.StatusBadRequest, "manifest uses %s chunks of %d bytes; task %s needs %s chunks of %d bytes",
			m.Hash, m.ChunkSize, t.ID, ti.Hash, ti.ChunkSize)
	}
	lock, err := s.Store.LockShared(ctx, "capture "+t.ID, nil)
	if err != nil {
		return agent.Result{}, err
	}
	defer lock.Release(context.WithoutCancel(ctx))
	var parent *store.Version
	if id, err := s.Store.GetTag(ctx, ti.Image, manifest.DefaultTag); err == nil {
		if parent, err = s.Store.GetManifest(ctx, id); err != nil {
			return agent.Result{}, err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return agent.Result{}, err
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
			return agent.Result{}, err
		}
		st.StoredBytes += size
	}
	if len(missing) > 0 {
		return agent.Result{}, &httpError{status: http.StatusConflict, retry: true,
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
			return agent.Result{}, fail(http.StatusBadRequest, "manifest: %v", err)
		}
		s.mu.Lock()
		st.AddedBytes = s.uploaded[t.ID]
		s.mu.Unlock()
		if v, err = s.Store.PutVersion(ctx, enc, st); err != nil {
			return agent.Result{}, err
		}
		if err := lock.Err(); err != nil {
			return agent.Result{}, fmt.Errorf("publishing %s: %w", t.ID, err)
		}
		if err := s.Store.SetTag(ctx, ti.Image, manifest.DefaultTag, v.ID); err != nil {
			return agent.Result{}, err
		}
	}
	res := agent.Result{Version: v.ID.String(), DiskSize: m.DiskSize, StoredBytes: st.StoredBytes, Chunks: int64(len(m.Chunks))}
	if _, err := s.finish(ctx, t, state.TaskDone, res, ""); err != nil {
		return res, err
	}
	s.log().Info("capture published", "task", t.ID, "image", ti.Image, "version", v.ID.Short(), "stored_bytes", st.StoredBytes)
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

// finish ends task t and tells its waiting activity, once.
func (s *Server) finish(ctx context.Context, t state.Task, st string, res agent.Result, msg string) (state.Task, error) {
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

var phases = map[string]bool{"reading": true, "uploading": true, "writing": true, "verifying": true, "starting": true}

func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	t, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var p agent.Progress
	if err := readJSON(r, &p); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if !phases[p.Phase] || p.Done < 0 || p.Total < 0 || p.MovedBytes < 0 || p.Done > p.Total {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "progress %+v: want a known phase and 0 <= done <= total", p))
		return
	}
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
	s.reply(w, r, map[string]string{"state": t.State}, nil)
}

func (s *Server) done(w http.ResponseWriter, r *http.Request) {
	t, err := s.authorize(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var d agent.Done
	if err := readJSON(r, &d); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	res, err := s.Done(r.Context(), t, d)
	s.reply(w, r, res, err)
}

// Done records the end an agent reports for task t.
func (s *Server) Done(ctx context.Context, t state.Task, d agent.Done) (agent.Result, error) {
	name := t.MAC
	if d.Error != "" {
		msg := d.Error
		if len(msg) > 2048 {
			msg = msg[:2048]
		}
		_, err := s.finish(ctx, t, state.TaskFailed, agent.Result{}, "terminal "+name+": "+msg)
		return agent.Result{}, err
	}
	if t.Kind == "capture" {
		return agent.Result{}, fail(http.StatusBadRequest, "a capture ends by publishing its manifest, or by reporting an error")
	}
	if d.Written < 0 || d.WrittenBytes < 0 || d.Skipped < 0 {
		return agent.Result{}, fail(http.StatusBadRequest, "negative counts in %+v", d)
	}
	if !d.Verified {
		_, err := s.finish(ctx, t, state.TaskFailed, agent.Result{}, "terminal "+name+" wrote the image but did not verify it")
		return agent.Result{}, err
	}
	res := agent.Result{Version: t.Image, Written: d.Written, WrittenBytes: d.WrittenBytes, Skipped: d.Skipped, Verified: true}
	_, err := s.finish(ctx, t, state.TaskDone, res, "")
	return res, err
}
