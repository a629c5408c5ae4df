package agentapi

import (
	"errors"
	"net"
	"net/http"

	"tms/agentwire"
	"tms/state"
)

// enroll trades an enrollment token for a terminal's agent key (state.RedeemEnrollToken):
// POST /v1/agent/enroll. The key is a secret: the request is refused over plain HTTP from
// anything but loopback.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		if ip := net.ParseIP(remoteIP(r)); ip == nil || !ip.IsLoopback() {
			s.reply(w, r, nil, fail(http.StatusForbidden, "enrollment hands out the terminal's key: it needs the region's HTTPS endpoint (region.tls)"))
			return
		}
	}
	var req agentwire.EnrollRequest
	if err := readJSON(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if len(req.Token) == 0 || len(req.Token) > agentwire.MaxEnrollToken {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "the token is %d bytes; a token is 1 to %d", len(req.Token), agentwire.MaxEnrollToken))
		return
	}
	mac, err := state.NormalizeMAC(req.MAC)
	if err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "%v", err))
		return
	}
	key, err := s.Inventory.RedeemEnrollToken(r.Context(), req.Token, mac, s.now())
	if errors.Is(err, state.ErrTokenRefused) {
		s.log().Warn("refused an enrollment", "mac", mac, "remote", r.RemoteAddr, "err", err)
		s.reply(w, r, nil, fail(http.StatusForbidden, "%v", err))
		return
	}
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	s.log().Info("a terminal traded an enrollment token for its agent key", "mac", mac, "remote", r.RemoteAddr)
	s.reply(w, r, agentwire.EnrollReply{Key: key}, nil)
}
