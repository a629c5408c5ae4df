package agentapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tms/agentwire"
	"tms/manifest"
	"tms/state"
	"tms/store"
)

// hello is the installed OS's agent service saying it started: POST /v1/agent/hello, signed
// with the terminal's agent key. The terminal is recorded as seen; the reply names the version
// recorded for its disk and samples to check it with (agentwire.HelloReply).
func (s *Server) hello(w http.ResponseWriter, r *http.Request) {
	body, mac, err := s.signedBody(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var req agentwire.HelloRequest
	if err := decodeJSON(body, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if m, err := state.NormalizeMAC(req.MAC); err != nil || m != mac {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "the hello names terminal %.32q but is signed by %s", req.MAC, mac))
		return
	}
	if req.DiskSize < 0 {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "disk size %d is negative", req.DiskSize))
		return
	}
	ctx := r.Context()
	if err := s.Inventory.Seen(ctx, mac, remoteIP(r), s.now()); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	t, err := s.Inventory.Terminal(ctx, mac)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var rep agentwire.HelloReply
	if t.Version.IsZero() || s.Store == nil {
		rep.Servers = s.servers(ctx)
		s.reply(w, r, rep, nil)
		return
	}
	v, err := s.Store.GetManifest(ctx, t.Version)
	if errors.Is(err, store.ErrNotFound) {
		// The region no longer holds the version: nothing to check against.
		rep.Servers = s.servers(ctx)
		s.reply(w, r, rep, nil)
		return
	}
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	m := v.Manifest
	if req.DiskSize > 0 && req.DiskSize < m.DiskSize {
		s.forgetVersion(r, mac, t.Version, "its disk is smaller than the version")
		rep.Servers = s.servers(ctx)
		s.reply(w, r, rep, nil)
		return
	}
	rep = agentwire.HelloReply{Version: t.Version.String(), Hash: m.Hash, Samples: samples(m)}
	rep.Servers = s.servers(ctx)
	s.reply(w, r, rep, nil)
}

// samples picks the chunks a hello checks: chunk 0 (the partition table and boot code, which
// any reinstall rewrites) and up to agentwire.MaxSamples-1 more spread evenly over the disk.
func samples(m *manifest.Manifest) []agentwire.DiskSample {
	n := len(m.Chunks)
	var out []agentwire.DiskSample
	seen := map[int]bool{}
	for k := range agentwire.MaxSamples {
		i := k * n / agentwire.MaxSamples
		if i >= n || seen[i] {
			continue
		}
		seen[i] = true
		off, length := m.ChunkRange(i)
		out = append(out, agentwire.DiskSample{Index: i, Offset: off, Length: length, Chunk: m.Chunks[i]})
	}
	return out
}

// helloCheck is the service's report of its disk against the hello's samples: POST
// /v1/agent/hello/check. A mismatch, or a disk it could not read, makes the region forget the
// version it recorded for the terminal, so that the next update compares every block.
func (s *Server) helloCheck(w http.ResponseWriter, r *http.Request) {
	body, mac, err := s.signedBody(r)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	var c agentwire.DiskCheck
	if err := decodeJSON(body, &c); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if err := c.Validate(); err != nil {
		s.reply(w, r, nil, fail(http.StatusBadRequest, "%v", err))
		return
	}
	t, err := s.Inventory.Terminal(r.Context(), mac)
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	if t.Version.String() != c.Version {
		// A deploy recorded another version since the hello: this check is about the old one.
		s.reply(w, r, struct{}{}, nil)
		return
	}
	switch {
	case c.Error != "":
		s.forgetVersion(r, mac, t.Version, "its agent could not read the disk: "+c.Error)
	case len(c.Mismatch) > 0:
		s.forgetVersion(r, mac, t.Version, "chunks "+joinInts(c.Mismatch)+" of its disk differ from the version")
	}
	s.reply(w, r, struct{}{}, nil)
}

// forgetVersion records that terminal mac's disk no longer holds version id, and why (in the log).
func (s *Server) forgetVersion(r *http.Request, mac string, id manifest.ID, why string) {
	forgot, err := s.Inventory.ForgetVersion(r.Context(), mac, id,
		fmt.Sprintf("%s (the agent service's check at %s)", why, s.now().UTC().Format(time.DateTime+" UTC")))
	if err != nil {
		s.log().Warn("could not forget a terminal's recorded version", "mac", mac, "err", err)
		return
	}
	if !forgot {
		return // a deploy recorded another version meanwhile
	}
	s.log().Warn("forgot the version recorded for a terminal's disk: the next update compares every block",
		"mac", mac, "version", id.Short(), "why", why)
}

// signedBody reads a key-signed request's body and returns it with the MAC that signed it.
func (s *Server) signedBody(r *http.Request) ([]byte, string, error) {
	if !agentwire.IsKeySigned(r.Header.Get("Authorization")) {
		return nil, "", fail(http.StatusUnauthorized, "this request must be signed with the terminal's agent key (%s)", agentwire.KeyScheme)
	}
	body, err := readBody(r, agentwire.MaxJSON)
	if err != nil {
		return nil, "", err
	}
	mac, err := s.checkKey(r, body)
	return body, mac, err
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
