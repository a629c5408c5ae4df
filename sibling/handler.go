package sibling

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"tms/manifest"
	"tms/signing"
	"tms/store"
)

// Kinds of object a sibling lends, the first segment of its route.
const (
	KindChunk     = "chunks"
	KindManifest  = "manifests"
	KindSignature = "signatures"
)

// Route is the pattern of the sibling routes.
const Route = "GET /v1/sibling/{kind}/{id}"

// maxObject bounds what a sibling may send of each kind.
func maxObject(kind string) int64 {
	switch kind {
	case KindChunk:
		return maxFrame
	case KindManifest:
		return manifest.MaxEncodedSize
	case KindSignature:
		return signing.MaxSignatureJSON
	}
	return 0
}

// maxFrame bounds one stored chunk: zstd never expands data by more than a little (as
// agentwire.MaxFrame).
const maxFrame = manifest.MaxChunkSize + manifest.MaxChunkSize/64 + 1024

// objectKey is the store key of an object of kind.
func objectKey(kind string, id manifest.ID) string {
	switch kind {
	case KindChunk:
		return store.ChunkKey(id)
	case KindSignature:
		return store.SignatureKey(id)
	}
	return "manifests/" + id.String()
}

// Handler serves a server's own store to its siblings: a chunk's stored frame, a manifest, a
// signature, each only from this server's store (Backend is the store's backend under any
// ReadThrough, so two servers that both lack an object never ask each other in a circle).
type Handler struct {
	Backend store.Backend
	// Secret is the region's sibling secret; a request without a good token made with it is
	// refused (401).
	Secret []byte
	// Mailbox, if set, passes siblings' commands to the agents that poll this server.
	Mailbox Mailbox
	Log     *slog.Logger
	Now     func() time.Time
}

// Routes registers the handler's routes on mux.
func (h *Handler) Routes(mux *http.ServeMux) {
	mux.HandleFunc(Route, h.object)
	mux.HandleFunc(CommandRoute, h.command)
}

// authorized checks a sibling request's token, and answers 401 if it is not good.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	if _, err := Check(h.Secret, r.Header.Get("Authorization"), r.Method, r.URL.EscapedPath(), now); err != nil {
		h.log().Warn("refused a sibling request", "from", r.RemoteAddr, "path", r.URL.Path, "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return false
	}
	return true
}

// object serves a chunk, a manifest or a signature.
func (h *Handler) object(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(w, r) {
		return
	}
	kind := r.PathValue("kind")
	if maxObject(kind) == 0 {
		http.Error(w, "no such kind of object: want chunks, manifests or signatures", http.StatusNotFound)
		return
	}
	id, err := manifest.ParseID(r.PathValue("id"))
	if err != nil {
		http.Error(w, "id: "+err.Error(), http.StatusBadRequest)
		return
	}
	b, err := h.Backend.Get(r.Context(), objectKey(kind, id))
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, kind+" "+id.Short()+" is not in this server's store", http.StatusNotFound)
		return
	case err != nil:
		h.log().Error("sibling request failed", "path", r.URL.Path, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.New(slog.DiscardHandler)
}
