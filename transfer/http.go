package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"tms/manifest"
	"tms/signing"
	"tms/store"
	"tms/wanrate"
)

// Handler serves a store's versions to peers holding a grant:
//
//	GET /v1/versions/{version}/manifest         the encoded manifest
//	GET /v1/versions/{version}/signature        central's signature of the version (404: none)
//	GET /v1/versions/{version}/chunks/{chunk}   a chunk's stored zstd frame
//	GET /v1/versions/{version}/stats            what the version takes in this store (store.Stats;
//	                                            404: none kept), so a puller can check its room first
//
// with "Authorization: Bearer <grant>". A grant is minted by central for one version and one
// serving region (package signing); it opens that version here only if it names this region,
// and only chunks that version references.
//
// While a peer pulls, the version is held in the store (see store.Hold) by "pull/<audience>/
// <version>", so 'tms image rm' and gc leave it alone. The handler cannot tell when a pull ends,
// so the hold slides: each request keeps it PullHoldTTL ahead (never past the grant's expiry),
// rewriting it once half of that has passed, and it lapses PullHoldTTL after the last request.
type Handler struct {
	Store *store.Store
	// Region is this region's id: a grant must name it as the serving region.
	Region string
	// CentralKey checks grants; only central holds the private half.
	CentralKey signing.PublicKey
	Log        *slog.Logger
	// Now gives the time grants are checked against (default time.Now).
	Now func() time.Time
	// Meter, if set, counts the bytes of the chunks served (peer path, out); only Bytes is
	// called.
	Meter Meter
	// Limit, if set, paces what the handler serves: the region's WAN cap (package wanrate).
	Limit wanrate.Limiter

	versions store.VersionCache // the versions peers pull and their chunks, the last few

	mu   sync.Mutex
	held map[string]time.Time // holder -> the expiry of its hold in the store
}

// maxHeld bounds the holds a Handler remembers: one per pull under way.
const maxHeld = 1024

// PullHoldTTL is how long a peer's pull holds its version after its last request.
const PullHoldTTL = 2 * time.Minute

// Routes registers the handler's endpoints on mux.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/versions/{version}/manifest", h.manifest)
	mux.HandleFunc("GET /v1/versions/{version}/signature", h.signature)
	mux.HandleFunc("GET /v1/versions/{version}/chunks/{chunk}", h.chunk)
	mux.HandleFunc("GET /v1/versions/{version}/stats", h.stats)
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	id, ok := h.authorize(w, r)
	if !ok {
		return
	}
	st, err := h.Store.GetStats(r.Context(), id)
	if err != nil {
		h.fail(w, r, "stats of "+id.Short(), err)
		return
	}
	b, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (h *Handler) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// authorize checks the request's grant against the version in its path.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request) (manifest.ID, bool) {
	id, err := manifest.ParseID(r.PathValue("version"))
	if err != nil {
		http.Error(w, "bad version id: "+err.Error(), http.StatusBadRequest)
		return id, false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tms"`)
		http.Error(w, "a grant is required", http.StatusUnauthorized)
		return id, false
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	g, err := h.CentralKey.VerifyGrant(token, h.Region, now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return id, false
	}
	if g.Version != id {
		http.Error(w, "the grant is for another version", http.StatusForbidden)
		return id, false
	}
	if err := h.hold(r.Context(), g, now()); err != nil {
		h.fail(w, r, "version "+id.Short(), err)
		return id, false
	}
	return id, true
}

// hold keeps the granted version in the store for PullHoldTTL more, within the grant.
func (h *Handler) hold(ctx context.Context, g signing.Grant, now time.Time) error {
	holder := "pull/" + g.Audience + "/" + g.Version.Short()
	if g.Audience == "" {
		holder = "pull/" + g.Version.Short()
	}
	if store.ValidateHolder(holder) != nil {
		holder = "pull/" + g.Version.Short() // an audience no person could read
	}
	until := now.Add(PullHoldTTL)
	if g.Expires.Before(until) {
		until = g.Expires
	}
	h.mu.Lock()
	prev := h.held[holder]
	h.mu.Unlock()
	if prev.Sub(now) > PullHoldTTL/2 || !prev.Before(until) {
		return nil // held long enough for now
	}
	if err := h.Store.Hold(ctx, g.Version, holder, until); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		h.held = map[string]time.Time{}
	}
	if len(h.held) >= maxHeld {
		for k, t := range h.held {
			if !t.After(now) {
				delete(h.held, k)
			}
		}
	}
	if len(h.held) < maxHeld {
		h.held[holder] = until
	}
	return nil
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, what+" not found", http.StatusNotFound)
	case errors.Is(err, store.ErrCorrupt):
		// Never serve bytes that do not match their id; the store needs repair.
		h.log().Error("refusing to serve corrupt data", "what", what, "err", err)
		http.Error(w, what+" is corrupt on this server", http.StatusInternalServerError)
	case r.Context().Err() != nil:
		// The peer went away.
	default:
		h.log().Error("store unavailable", "what", what, "err", err)
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
	}
}

func (h *Handler) manifest(w http.ResponseWriter, r *http.Request) {
	id, ok := h.authorize(w, r)
	if !ok {
		return
	}
	v, err := h.versions.Get(r.Context(), h.Store, id)
	if err != nil {
		h.fail(w, r, "version "+id.Short(), err)
		return
	}
	h.write(w, r, "application/json", v.Encoded)
}

func (h *Handler) signature(w http.ResponseWriter, r *http.Request) {
	id, ok := h.authorize(w, r)
	if !ok {
		return
	}
	sig, err := h.Store.GetSignature(r.Context(), id)
	if err != nil {
		h.fail(w, r, "signature of "+id.Short(), err)
		return
	}
	h.write(w, r, "application/json", sig.Encode())
}

func (h *Handler) chunk(w http.ResponseWriter, r *http.Request) {
	vid, ok := h.authorize(w, r)
	if !ok {
		return
	}
	cid, err := manifest.ParseID(r.PathValue("chunk"))
	if err != nil {
		http.Error(w, "bad chunk id: "+err.Error(), http.StatusBadRequest)
		return
	}
	v, err := h.versions.Get(r.Context(), h.Store, vid)
	if err != nil {
		h.fail(w, r, "version "+vid.Short(), err)
		return
	}
	if !v.HasChunk(cid) {
		http.Error(w, "chunk is not part of the granted version", http.StatusForbidden)
		return
	}
	frame, err := h.Store.Backend().Get(r.Context(), store.ChunkKey(cid))
	if err != nil {
		h.fail(w, r, "chunk "+cid.Short(), err)
		return
	}
	if n := h.write(w, r, "application/zstd", frame); n > 0 && h.Meter != nil {
		h.Meter.Bytes(int64(n))
	}
}

// write answers body, paced by h.Limit, and returns the bytes written. The length goes
// ahead, so a peer tells a body cut short from a whole one however the body is paced.
func (h *Handler) write(w http.ResponseWriter, r *http.Request, contentType string, body []byte) int {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	n, _ := wanrate.NewResponseWriter(r.Context(), w, h.Limit).Write(body)
	return n
}

// HTTPSource reads one version from a peer's Handler with a grant for it.
type HTTPSource struct {
	// Base is the peer's data endpoint, for example http://10.0.5.2:8081.
	Base *url.URL
	// Version is the version the grant opens; chunks are fetched under it.
	Version manifest.ID
	Grant   string
	Client  *http.Client
	// Limit, if set, paces the bodies as they are read: the transfer's and its region's WAN
	// caps (package wanrate).
	Limit wanrate.Limiter
}

var _ Source = (*HTTPSource)(nil)

func (s *HTTPSource) String() string { return s.Base.String() }

func (s *HTTPSource) get(ctx context.Context, path, what string, limit int64) ([]byte, error) {
	u := s.Base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.Grant)
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.String(), What: what, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		kind := store.ErrUnavailable
		if resp.StatusCode == http.StatusNotFound {
			kind = store.ErrNotFound
		}
		return nil, &store.Error{Kind: kind, Store: s.String(), What: what,
			Err: fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))}
	}
	if resp.ContentLength > limit {
		return nil, &store.Error{Kind: store.ErrCorrupt, Store: s.String(), What: what, Err: fmt.Errorf("%d bytes, more than %d", resp.ContentLength, limit)}
	}
	b, err := io.ReadAll(io.LimitReader(wanrate.NewReader(ctx, resp.Body, s.Limit), limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.String(), What: what, Err: err}
	}
	if int64(len(b)) > limit {
		return nil, &store.Error{Kind: store.ErrCorrupt, Store: s.String(), What: what, Err: fmt.Errorf("more than %d bytes", limit)}
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.String(), What: what, Err: fmt.Errorf("body cut short: %d of %d bytes", len(b), resp.ContentLength)}
	}
	return b, nil
}

// maxFrame bounds a chunk frame: zstd never expands data by more than a little.
const maxFrame = manifest.MaxChunkSize + manifest.MaxChunkSize/64 + 1024

func (s *HTTPSource) GetManifestBytes(ctx context.Context, id manifest.ID) ([]byte, error) {
	return s.get(ctx, "/v1/versions/"+id.String()+"/manifest", "manifest "+id.Short(), manifest.MaxEncodedSize)
}

// GetSignature reads the version's signature; ErrNotFound if the peer holds none.
func (s *HTTPSource) GetSignature(ctx context.Context, id manifest.ID) (signing.Signature, error) {
	b, err := s.get(ctx, "/v1/versions/"+id.String()+"/signature", "signature of "+id.Short(), signing.MaxSignatureJSON)
	if err != nil {
		return signing.Signature{}, err
	}
	sig, err := signing.DecodeSignature(b)
	if err != nil {
		return sig, &store.Error{Kind: store.ErrCorrupt, Store: s.String(), What: "signature of " + id.Short(), Err: err}
	}
	return sig, nil
}

// GetStats returns the source's stats of version id: ErrNotFound if it keeps none (or is a tms
// that does not serve them), ErrCorrupt if what it sent is not stats.
func (s *HTTPSource) GetStats(ctx context.Context, id manifest.ID) (store.Stats, error) {
	b, err := s.get(ctx, "/v1/versions/"+id.String()+"/stats", "stats of "+id.Short(), store.MaxStatsJSON)
	if err != nil {
		return store.Stats{}, err
	}
	st, err := store.ParseStats(b)
	if err != nil {
		return st, &store.Error{Kind: store.ErrCorrupt, Store: s.String(), What: "stats of " + id.Short(), Err: err}
	}
	return st, nil
}

func (s *HTTPSource) GetChunkFrame(ctx context.Context, id manifest.ID) ([]byte, error) {
	return s.get(ctx, "/v1/versions/"+s.Version.String()+"/chunks/"+id.String(), "chunk "+id.Short(), maxFrame)
}
