package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"tms/agentwire"
	"tms/state"
	"tms/store"
)

// authTTL is how long a checked token is trusted without asking the database again, so the
// chunk requests of a deploy do not each cost three queries.
const authTTL = 2 * time.Second

// maxNonces bounds the nonces of key-signed requests remembered at once. Only holders of an
// agent key can add one, and each is forgotten after 2×agentwire.MaxKeySkew.
const maxNonces = 1 << 16

// maxDiskSize is the largest disk a boot request may report (1 PiB).
const maxDiskSize = 1 << 50

type authKey struct{ mac, token, ip string }

type authEntry struct {
	task  state.Task
	claim state.Claim
	until time.Time
}

// boot records the terminal and its disk and answers its boot action. Only a boot request that
// proves it speaks for the terminal (this boot's token, or a signature with the terminal's agent
// key) gets a task or changes what the region records; any other gets "boot your own disk".
func (s *Server) boot(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, agentwire.MaxJSON)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var req agentwire.BootRequest
	if err := decodeJSON(body, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	signed, request := false, ""
	if h := r.Header.Get("Authorization"); agentwire.IsKeySigned(h) {
		mac, err := s.checkKey(r, body)
		if err != nil {
			s.reply(w, r, nil, err)
			return
		}
		if m, err := state.NormalizeMAC(req.MAC); err != nil || m != mac {
			s.reply(w, r, nil, fail(http.StatusBadRequest, "the boot request names %q but is signed by terminal %s", req.MAC, mac))
			return
		}
		signed = true
		// The signature's nonce names this request: sent to two of the region's servers, it
		// is answered by one (state.ClaimBootRequest).
		if ka, err := agentwire.ParseKeyAuth(h); err == nil {
			request = "signed " + ka.Nonce
		}
	}
	rep, err := s.boot1(r.Context(), req, remoteIP(r), signed, request)
	s.reply(w, r, rep, err)
}

// Boot is the boot request's work: what a terminal that just started from address ip is to do.
// signed says the request was signed with the terminal's agent key.
func (s *Server) Boot(ctx context.Context, req agentwire.BootRequest, ip string, signed bool) (agentwire.BootReply, error) {
	return s.boot1(ctx, req, ip, signed, "")
}

// boot1 is Boot for a signed request named request (its nonce; empty: none).
func (s *Server) boot1(ctx context.Context, req agentwire.BootRequest, ip string, signed bool, request string) (agentwire.BootReply, error) {
	local := agentwire.BootReply{Action: agentwire.ActionLocal}
	mac, err := state.NormalizeMAC(req.MAC)
	if err != nil {
		return local, fail(http.StatusBadRequest, "%v", err)
	}
	if req.DiskSize < 0 || req.DiskSize > maxDiskSize || len(req.Disk) > 4096 || len(req.AgentVersion) > 256 || len(req.BootToken) > 256 {
		return local, fail(http.StatusBadRequest, "disk %.64q of %d bytes is not a disk", req.Disk, req.DiskSize)
	}
	now := s.now()
	a, t, err := s.pending(ctx, mac)
	if err != nil {
		return local, err
	}
	var token string
	switch {
	case req.BootToken != "":
		// Network boot: the token came on the kernel command line, in clear. It is good once,
		// from the address that claimed the boot, and is exchanged here for the task's token.
		if t == nil {
			return local, nil
		}
		// The boot token's hash names the request: exchanged once, by one of the region's
		// servers.
		sum := sha256.Sum256([]byte(req.BootToken))
		request := "boot-token " + hex.EncodeToString(sum[:16])
		_, ok, err := s.Inventory.CheckClaim(ctx, mac, t.ID, req.BootToken, ip, now)
		if err != nil {
			return local, s.refuse(ctx, err)
		}
		if !ok {
			if taken, err := s.Inventory.ClaimedBy(ctx, mac, request); err != nil {
				return local, err
			} else if taken {
				return local, s.refuse(ctx, state.ErrClaimTaken)
			}
			s.log().Warn("boot request with a token that opens no task: the terminal boots its own disk", "mac", mac, "task", t.ID, "remote", ip)
			return local, nil
		}
		if token, _, err = s.Inventory.ClaimBootRequest(ctx, mac, t.ID, ip, true, request, now); err != nil {
			return local, s.refuse(ctx, err)
		}
	case signed:
		if t != nil {
			if token, _, err = s.Inventory.ClaimBootRequest(ctx, mac, t.ID, ip, false, request, now); err != nil {
				return local, s.refuse(ctx, err)
			}
		}
	default:
		// Anyone can name any MAC: an unproven boot request is a sighting, nothing more.
		if err := s.Inventory.Seen(ctx, mac, ip, now); err != nil {
			return local, err
		}
		return local, nil
	}
	if err := s.Inventory.Seen(ctx, mac, ip, now); err != nil {
		return local, err
	}
	if err := s.Inventory.SetDisk(ctx, mac, req.Disk, req.DiskSize); err != nil && !errors.Is(err, store.ErrNotFound) {
		return local, err
	}
	if token == "" {
		return local, nil
	}
	s.forget(mac)
	s.log().Info("terminal booted into a task", "mac", mac, "task", t.ID, "kind", t.Kind, "agent", req.AgentVersion, "remote", ip)
	return agentwire.BootReply{Action: a.Action, Task: t.ID, Token: token, Servers: s.servers(ctx)}, nil
}

// ClaimNetworkBoot is the boot service's claim of a terminal's boot, made when iPXE at address
// ip asks for the terminal's script: the terminal's pending boot action and a token for this
// boot, or a zero action when it has nothing to do. A second machine claiming the boot fails the
// task (the error says so).
func (s *Server) ClaimNetworkBoot(ctx context.Context, mac, ip string) (state.BootAction, string, error) {
	a, t, err := s.pending(ctx, mac)
	if err != nil || t == nil {
		return state.BootAction{}, "", err
	}
	token, _, err := s.Inventory.ClaimBoot(ctx, mac, t.ID, ip, true, s.now())
	if err != nil {
		return state.BootAction{}, "", s.refuse(ctx, err)
	}
	s.forget(t.MAC)
	return a, token, nil
}

// pending returns mac's boot action and its unfinished task, or a nil task.
func (s *Server) pending(ctx context.Context, mac string) (state.BootAction, *state.Task, error) {
	a, err := s.Inventory.BootAction(ctx, mac, s.now())
	if err != nil || a.Action == agentwire.ActionLocal || a.Task == "" {
		return a, nil, err
	}
	t, err := s.Inventory.Task(ctx, a.Task)
	if errors.Is(err, store.ErrNotFound) {
		return a, nil, nil
	}
	if err != nil {
		return a, nil, err
	}
	if t.Finished() || t.MAC != mac || agentwire.Action(t.Kind) != a.Action {
		return a, nil, nil
	}
	return a, &t, nil
}

// refuse turns a claim's error into the answer: a rival fails the task.
func (s *Server) refuse(ctx context.Context, err error) error {
	var re *state.RivalError
	if errors.As(err, &re) {
		return s.rival(ctx, re)
	}
	if errors.Is(err, state.ErrClaimTaken) {
		// Not a rival: the same request, answered by another server. This answer says so
		// and changes nothing; the terminal goes on with the answer it got from that server.
		return &httpError{status: http.StatusConflict, msg: err.Error(), err: err}
	}
	return err
}

// rival fails a task whose boot two machines claimed: the task ends failed with both addresses,
// every token of the boot stops working, and nothing either machine sends afterwards is taken.
func (s *Server) rival(ctx context.Context, re *state.RivalError) error {
	msg := re.Error() + "; nothing this task did was published or marked done"
	s.log().Warn("two machines claimed one terminal's boot: the task fails", "mac", re.MAC, "task", re.Task,
		"first", re.First, "second", re.Second, "how", re.Why)
	if err := s.Inventory.RevokeBoot(ctx, re.MAC, re.Task); err != nil {
		return err
	}
	s.forget(re.MAC)
	if t, err := s.Inventory.Task(ctx, re.Task); err == nil {
		if _, err := s.finish(ctx, t, state.TaskFailed, agentwire.Result{}, msg); err != nil {
			return err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return &httpError{status: http.StatusConflict, msg: msg, err: re}
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

// authorize checks a task request's terminal, token and address and returns the task they open,
// which must not have finished, and the boot's claim.
func (s *Server) authorize(r *http.Request) (state.Task, state.Claim, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	rawMAC := r.Header.Get(agentwire.TerminalHeader)
	if !ok || tok == "" || rawMAC == "" || len(tok) > 256 {
		return state.Task{}, state.Claim{}, fail(http.StatusUnauthorized, "a task request needs the %s header and the boot's bearer token", agentwire.TerminalHeader)
	}
	mac, err := state.NormalizeMAC(rawMAC)
	if err != nil {
		return state.Task{}, state.Claim{}, fail(http.StatusBadRequest, "%s: %v", agentwire.TerminalHeader, err)
	}
	now := s.now()
	key := authKey{mac, tok, remoteIP(r)}
	s.mu.Lock()
	e, hit := s.auth[key]
	s.mu.Unlock()
	if hit && now.Before(e.until) {
		return e.task, e.claim, nil
	}
	ctx := r.Context()
	a, err := s.Inventory.BootAction(ctx, mac, now)
	if err != nil {
		return state.Task{}, state.Claim{}, err
	}
	denied := fail(http.StatusForbidden, "the token does not open a task of terminal %s (it may belong to an earlier boot)", mac)
	if a.Task == "" {
		return state.Task{}, state.Claim{}, denied
	}
	c, ok, err := s.Inventory.CheckClaim(ctx, mac, a.Task, tok, key.ip, now)
	if err != nil {
		return state.Task{}, state.Claim{}, s.refuse(ctx, err)
	}
	if !ok {
		return state.Task{}, state.Claim{}, denied
	}
	t, err := s.Inventory.Task(ctx, a.Task)
	if errors.Is(err, store.ErrNotFound) || err == nil && t.MAC != mac {
		return state.Task{}, state.Claim{}, denied
	}
	if err != nil {
		return state.Task{}, state.Claim{}, err
	}
	if t.Finished() {
		return state.Task{}, state.Claim{}, fail(http.StatusConflict, "task %s is already %s", t.ID, t.State)
	}
	s.mu.Lock()
	if s.auth == nil || len(s.auth) > 4096 {
		s.auth = map[authKey]authEntry{}
	}
	s.auth[key] = authEntry{task: t, claim: c, until: now.Add(authTTL)}
	s.mu.Unlock()
	return t, c, nil
}

// settled refuses a task's result while its boot's network claim is younger than s.Quiet.
func (s *Server) settled(t state.Task, c state.Claim) error {
	quiet := s.Quiet
	if s.QuietFunc != nil {
		quiet = s.QuietFunc()
	}
	if !c.Network || quiet <= 0 {
		return nil
	}
	at := c.Claimed.Add(quiet)
	if now := s.now(); now.Before(at) {
		return &httpError{status: http.StatusTooEarly, retry: true,
			msg: "the region takes task " + t.ID + "'s result from " + at.UTC().Format(time.TimeOnly) + " UTC on (" + quiet.String() +
				" after the boot was claimed), so that any other machine claiming this terminal shows itself first"}
	}
	return nil
}

// checkKey checks a request signed with a terminal's agent key and returns the terminal's MAC.
// Each signature is taken once.
func (s *Server) checkKey(r *http.Request, body []byte) (string, error) {
	ka, err := agentwire.ParseKeyAuth(r.Header.Get("Authorization"))
	if err != nil {
		return "", fail(http.StatusUnauthorized, "%v", err)
	}
	mac, err := state.NormalizeMAC(ka.MAC)
	if err != nil {
		return "", fail(http.StatusUnauthorized, "%v: %v", agentwire.ErrKeyAuth, err)
	}
	key, err := s.Inventory.AgentKey(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		return "", fail(http.StatusUnauthorized, "%v: terminal %s has no agent key (is it enrolled?)", agentwire.ErrKeyAuth, mac)
	}
	if err != nil {
		return "", err
	}
	now := s.now()
	if err := ka.Verify(key, r.Method, r.URL.RequestURI(), body, now); err != nil {
		s.log().Warn("refused a request signed for a terminal", "mac", mac, "remote", r.RemoteAddr, "err", err)
		return "", fail(http.StatusUnauthorized, "%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nonces == nil {
		s.nonces = map[string]time.Time{}
	}
	n := mac + " " + ka.Nonce
	if _, seen := s.nonces[n]; seen {
		return "", fail(http.StatusUnauthorized, "%v: the request was already made once (a replay)", agentwire.ErrKeyAuth)
	}
	if len(s.nonces) >= maxNonces {
		for k, until := range s.nonces {
			if now.After(until) {
				delete(s.nonces, k)
			}
		}
		if len(s.nonces) >= maxNonces {
			return "", &httpError{status: http.StatusServiceUnavailable, msg: "too many signed requests at once; try again", retry: true}
		}
	}
	s.nonces[n] = ka.Time.Add(2 * agentwire.MaxKeySkew)
	s.mu.Unlock()
	// The region's other servers share the database: a request replayed to one of them is
	// refused there too.
	fresh, err := s.Inventory.UseNonce(r.Context(), mac, ka.Nonce, ka.Time.Add(2*agentwire.MaxKeySkew), now)
	s.mu.Lock() // for the deferred unlock
	if err != nil {
		return "", err
	}
	if !fresh {
		return "", fail(http.StatusUnauthorized, "%v: the request was already made once (a replay, here or at another of the region's servers)", agentwire.ErrKeyAuth)
	}
	return mac, nil
}
