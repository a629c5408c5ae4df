// Package agentapi is a region's HTTP API for the agents of its terminals: the region's side of
// the protocol of package agentwire, which package agent speaks.
//
// Nothing a request says about who sent it is believed. A terminal's boot into a task is claimed
// by the first machine that asks for it, through the boot service's iPXE script (network boot)
// or by a boot request signed with the terminal's agent key; the token minted for that boot works
// only from the address that claimed it. A second machine claiming the boot, or a token of the
// boot (the current one or one a later boot replaced) used from another address, fails the task,
// naming both addresses, and nothing the task did is published or marked done (auth.go). Task requests reach only the
// terminal's current task and, for a deploy or update, only the chunks of the version it writes
// (and, for an update, the manifest of the version the disk holds) (deploy.go). Once a deploy's
// or update's agent has read its task, the terminal's recorded version is forgotten until the
// task ends verified: a terminal that stops in the middle is never recorded as holding either
// version (task.go).
// Chunks an agent uploads are checked against their ids before they are stored, within a quota
// its disk implies, and a captured version is kept only when every chunk it names is in the store
// (capture.go). The terminals of a deploy or update that several write at once call the
// region's swarm tracker and fetch chunks from each other with the peer tokens it signs
// (swarm.go, docs/swarm.md). Progress reports become heartbeats of the task's WaitForAgent activity; the
// outcome completes it (task.go). Command polls are signed with the terminal's agent key
// (commands.go).
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
	"sync"
	"time"

	"tms/agentwire"
	"tms/arrival"
	"tms/internal/httpdeadline"
	"tms/manifest"
	"tms/metrics"
	"tms/state"
	"tms/store"
	"tms/swarm"
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
	// Quiet is how long a boot claimed through the network must stand before the region takes
	// its task's result (a published capture, a deploy reported done), so that a second machine
	// claiming the same boot shows itself first and the task fails instead (0: at once). A
	// region whose boot service answers on a classroom network sets it (region.boot.claim_quiet).
	Quiet time.Duration
	// QuietFunc, if set, is read for Quiet each time (the region's run-time setting
	// boot.claim_quiet, which central may change while the region runs).
	QuietFunc func() time.Duration
	// Metrics counts the chunks agents fetch and upload; nil counts nothing.
	Metrics *metrics.Region
	// Swarm, if set, is the tracker of the region's swarms: the terminals of a deploy or update
	// that several write at once fetch chunks from each other (swarm.go). Nil: every terminal
	// fetches every chunk from the region.
	Swarm *swarm.Tracker
	// Arrivals, if set, are the versions shares are bringing into the region's store (the
	// region activities' registry): a deploy's agents are served them while they arrive
	// (arriving.go). ArrivalWait bounds one request's wait for one chunk (default
	// DefaultArrivalWait).
	Arrivals    *arrival.Registry
	ArrivalWait time.Duration
	// Servers, if set, lists the endpoints of the region's other healthy servers, which share
	// this one's database: boot and task answers name them, so an agent whose server dies
	// carries on with the next (agentwire.ParseServers; docs/agent.md).
	Servers func(ctx context.Context) ([]string, error)

	mu       sync.Mutex
	boxes    map[string]*mailbox
	versions *store.VersionCache // the deployed versions and their chunks, made on first use
	// arrivingVersions are the versions served while they arrive, with their chunk sets
	arrivingVersions map[manifest.ID]arrivingVersion
	auth             map[authKey]authEntry
	nonces           map[string]time.Time // key-signed requests' nonces, until they can no longer be replayed
	uploaded         map[string]int64     // compressed bytes uploaded per capture task
	signer           *swarm.Signer        // signs peer tokens, made on first use

	frameBufs sync.Pool // *[]byte buffers chunk frames are read into
}

// Routes registers the API's handlers on mux.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/agent/boot", s.boot)
	mux.HandleFunc("GET /v1/agent/commands", s.commands)
	mux.HandleFunc("POST /v1/agent/hello", s.hello)
	mux.HandleFunc("POST /v1/agent/enroll", s.enroll)
	mux.HandleFunc("POST /v1/agent/hello/check", s.helloCheck)
	mux.HandleFunc("GET /v1/agent/task", s.task)
	mux.HandleFunc("GET /v1/agent/task/manifest", s.manifest)
	mux.HandleFunc("GET /v1/agent/task/base", s.base)
	mux.HandleFunc("GET /v1/agent/task/chunks/{chunk}", s.chunk)
	mux.HandleFunc("POST /v1/agent/task/frames", s.frames)
	mux.HandleFunc("POST /v1/agent/task/missing", s.missing)
	mux.HandleFunc("POST /v1/agent/task/chunks", s.upload)
	mux.HandleFunc("PUT /v1/agent/task/manifest", s.publish)
	mux.HandleFunc("POST /v1/agent/task/swarm", s.swarmPoll)
	mux.HandleFunc("POST /v1/agent/task/progress", s.progress)
	mux.HandleFunc("POST /v1/agent/task/done", s.done)
}

// servers is the region's other servers' endpoints for an agent's answer: at most
// agentwire.MaxServers, none that the agent would refuse. A list that cannot be had is left
// out of the answer (the agent keeps the one it has).
func (s *Server) servers(ctx context.Context) []string {
	if s.Servers == nil {
		return nil
	}
	list, err := s.Servers(ctx)
	if err != nil {
		s.log().Warn("the region's other servers could not be listed for an agent", "err", err)
		return nil
	}
	out := make([]string, 0, min(len(list), agentwire.MaxServers))
	for _, e := range list {
		if len(out) == agentwire.MaxServers {
			break
		}
		if _, err := agentwire.ParseServers([]string{e}); err != nil {
			s.log().Warn("a server of the region has an endpoint agents cannot use; not named to them", "endpoint", e, "err", err)
			continue
		}
		out = append(out, e)
	}
	return out
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
	err    error // the cause, if any
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.err }

func fail(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err == nil {
		json.NewEncoder(w).Encode(v)
		return
	}
	var he *httpError
	switch {
	case errors.As(err, &he):
	case errors.Is(err, context.Canceled):
		return // the agent went away
	case errors.Is(err, httpdeadline.ErrStalled):
		// The body stopped moving: the connection is cut, and a live agent sends it again.
		he = &httpError{status: http.StatusRequestTimeout, msg: "the request body stopped moving: " + err.Error(), retry: true}
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
	json.NewEncoder(w).Encode(agentwire.Error{Error: he.msg, Retry: he.retry})
}

// readBody reads a request body of at most limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fail(http.StatusRequestEntityTooLarge, "request body is over %d bytes", limit)
	}
	return b, nil
}

func decodeJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fail(http.StatusBadRequest, "request body is not valid JSON for this request: %v", err)
	}
	return nil
}

func readJSON(r *http.Request, v any) error {
	b, err := readBody(r, agentwire.MaxJSON)
	if err != nil {
		return err
	}
	return decodeJSON(b, v)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
