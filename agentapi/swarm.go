package agentapi

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/netip"
	"time"

	"tms/agentwire"
	"tms/metrics"
	"tms/state"
	"tms/swarm"
)

// swarmPoll is a member's call to the region's swarm tracker: it says which chunks of the
// version its task writes it holds, and gets chunks to fetch, each from a peer or from the
// region, and its peer token. The member's address is the one the call comes from.
func (s *Server) swarmPoll(w http.ResponseWriter, r *http.Request) {
	if s.Swarm == nil {
		s.reply(w, r, nil, fail(http.StatusNotFound, "this region runs no swarm: fetch every chunk from the region"))
		return
	}
	t, v, err := s.deployTask(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var req agentwire.SwarmRequest
	if err := readJSON(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	n := v.NumChunks()
	if err := req.Check(n); err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "%v", err))
		return
	}
	ip, err := netip.ParseAddr(remoteIP(r))
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "the call's address %q is not an IP address", r.RemoteAddr))
		return
	}
	ip = ip.Unmap()
	m := swarm.Member{ID: t.ID, Addr: netip.AddrPortFrom(ip, uint16(req.Port)), Key: ed25519.PublicKey(req.Key)}
	var regionHas func(int) bool
	if a := s.Arrivals.Running(v.ID); a != nil && a.NumChunks() == n {
		regionHas = a.HasIndex // send none the region lacks yet (arriving.go)
	}
	res := s.Swarm.PollHaving(v.ID, n, m, &req, req.Done, regionHas)
	for _, id := range res.Dropped {
		s.Metrics.SwarmPeerDropped()
		s.log().Warn("swarm: two terminals received bad bytes from a peer; no terminal is sent to it any more",
			"version", v.ID.Short(), "task", id)
	}
	for _, f := range req.Failed {
		if f.Bad {
			s.log().Warn("swarm: a terminal received bad bytes from a peer", "version", v.ID.Short(), "task", t.ID, "peer", f.Peer, "reason", f.Reason)
		}
	}
	s.Metrics.SwarmAssigned(metrics.SwarmSeed, res.Seeded-res.Relief)
	s.Metrics.SwarmAssigned(metrics.SwarmRelief, res.Relief)
	s.Metrics.SwarmAssigned(metrics.SwarmFallback, res.Fallback)
	s.Metrics.SwarmAssigned(metrics.SwarmPeer, len(res.Assign)-res.Seeded-res.Fallback)
	rep := agentwire.SwarmReply{Member: t.ID, Peers: res.Peers, Assign: res.Assign,
		RetryMS: int(res.Retry / time.Millisecond), LingerMS: int(res.Linger / time.Millisecond)}
	// The token and keys go out only when the agent lacks them: with 30 terminals calling
	// after every few chunks, sending them each time would take (by the replies' size) near
	// a tenth of a 16 Mbit/s port.
	signer := s.swarmSigner()
	keys, err := signer.PublicKeys()
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if stale := req.KeysTag != agentwire.KeysTag(keys); stale || req.Renew {
		if rep.Token, err = signer.Sign(swarm.Token{Version: v.ID, Member: t.ID, IP: ip, Key: req.Key}); err != nil {
			s.reply(w, r, nil, err)
			return
		}
		if stale {
			rep.Keys = keys
		}
	}
	s.reply(w, r, rep, nil)
}

func (s *Server) swarmSigner() *swarm.Signer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.signer == nil {
		s.signer = &swarm.Signer{Now: s.Now}
	}
	return s.signer
}

// swarmFor says whether task t's agent should join a swarm: the region runs them, and more than
// one of its terminals writes the version: as the task's workflow said (a terminal that asks
// for its task before its classmates' are set up joins too), else as the unfinished tasks
// count now.
func (s *Server) swarmFor(ctx context.Context, t state.Task) (bool, error) {
	if s.Swarm == nil || !t.Kind.Writes() {
		return false, nil
	}
	if t.Writers > 1 {
		return true, nil
	}
	n, err := s.Inventory.OpenWritesOf(ctx, t.Version)
	return n > 1, err
}
