package sibling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"tms/manifest"
	"tms/metrics"
	"tms/signing"
	"tms/store"
)

// Sibling is another server of the same region, as the region's registry lists it.
type Sibling struct {
	ID       string
	Endpoint string // its HTTP service, as the other servers reach it
}

// Siblings lists the region's other healthy servers, best first, not including the one asking.
// The region's registry of servers answers it; tests pass a static list.
type Siblings func(ctx context.Context) ([]Sibling, error)

// Static is a fixed list of siblings.
func Static(list ...Sibling) Siblings {
	return func(context.Context) ([]Sibling, error) { return list, nil }
}

// Fetcher asks a region's siblings for what this server's store lacks, and checks what they
// send.
type Fetcher struct {
	Siblings Siblings
	// Secret is the region's sibling secret (state.Inventory.SiblingSecret).
	Secret []byte
	// From names this server in its tokens and the siblings' logs.
	From string
	// CentralKey checks the signatures of the manifests siblings send: a manifest central did
	// not sign is refused.
	CentralKey signing.PublicKey
	HTTP       *http.Client
	// Timeout bounds each request to a sibling (default 30 s).
	Timeout time.Duration
	// Metrics counts the chunks taken and refused (path "sibling") and their bytes.
	Metrics *metrics.Region
	Log     *slog.Logger
	Now     func() time.Time

	codecOnce sync.Once
	codec     *store.Codec
}

// ErrBadObject marks an object a sibling sent that failed its check.
var ErrBadObject = errors.New("a sibling sent bad bytes")

func (f *Fetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *Fetcher) log() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (f *Fetcher) client() *http.Client {
	if f.HTTP != nil {
		return f.HTTP
	}
	return http.DefaultClient
}

func (f *Fetcher) from() string {
	if f.From == "" {
		return "region-server"
	}
	return f.From
}

// notFound is the answer when no sibling lends an object: the not-found of the server's own
// store. A sibling that could not be asked (it is down) does not turn it into an error: a live
// server whose sibling died must go on answering "not here" for what neither holds, not 5xx.
func notFound(what string, id manifest.ID) error {
	return &store.Error{Kind: store.ErrNotFound, Store: "the region's servers", What: what + " " + id.String(),
		Err: errors.New("neither this server's store nor a sibling's holds it")}
}

// Chunk returns chunk id's stored (zstd) frame from the first sibling that holds it and sends
// bytes that decompress, within a chunk's size, to bytes hashing to id (BLAKE3, or SHA-256 for
// versions named so). A sibling that sends anything else is skipped for it, counted and logged.
func (f *Fetcher) Chunk(ctx context.Context, id manifest.ID) ([]byte, error) {
	list, err := f.list(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range list {
		frame, err := f.get(ctx, s, KindChunk, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !errors.Is(err, store.ErrNotFound) {
				f.log().Debug("sibling not asked for a chunk", "sibling", s.ID, "chunk", id.Short(), "err", err)
			}
			continue
		}
		if reason, err := f.checkFrame(id, frame); err != nil {
			f.Metrics.ChunkRefused(metrics.PathSibling, reason)
			f.log().Warn("a sibling sent a chunk that does not match its id: skipped", "sibling", s.ID, "endpoint", s.Endpoint, "chunk", id.Short(), "err", err)
			continue
		}
		f.Metrics.ChunkVerified(metrics.PathSibling)
		f.Metrics.AddBytes(metrics.PathSibling, metrics.In, int64(len(frame)))
		return frame, nil
	}
	return nil, notFound("chunk", id)
}

// checkFrame checks a chunk's frame against its id and says why it is refused.
func (f *Fetcher) checkFrame(id manifest.ID, frame []byte) (reason string, err error) {
	f.codecOnce.Do(func() { f.codec = store.NewCodec(0) })
	return CheckFrame(f.codec, id, frame)
}

// CheckFrame checks that frame is a zstd frame of at most a chunk's size whose bytes hash to id
// (with BLAKE3 or SHA-256, the two hashes versions name chunks with), and says why not with a
// metrics.Reason*.
func CheckFrame(codec *store.Codec, id manifest.ID, frame []byte) (reason string, err error) {
	if len(frame) == 0 || len(frame) > maxFrame {
		return metrics.ReasonTooLarge, fmt.Errorf("%w: chunk %s: a frame of %d bytes; want 1 to %d", ErrBadObject, id.Short(), len(frame), maxFrame)
	}
	data, err := codec.Decompress(nil, frame, manifest.MaxChunkSize)
	if err != nil {
		return metrics.ReasonBadFrame, fmt.Errorf("%w: chunk %s: %v", ErrBadObject, id.Short(), err)
	}
	if manifest.BLAKE3.Sum(data) != id && manifest.SHA256.Sum(data) != id {
		return metrics.ReasonHashMismatch, fmt.Errorf("%w: chunk %s: its bytes hash to something else", ErrBadObject, id.Short())
	}
	return "", nil
}

// Version returns version id's manifest and central's signature of it from the first sibling
// that holds both and whose manifest hashes to id and carries central's signature. A manifest
// without a signature is not taken: the server could not check it.
func (f *Fetcher) Version(ctx context.Context, id manifest.ID) ([]byte, signing.Signature, error) {
	list, err := f.list(ctx)
	if err != nil {
		return nil, signing.Signature{}, err
	}
	for _, s := range list {
		b, err := f.get(ctx, s, KindManifest, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, signing.Signature{}, ctx.Err()
			}
			continue
		}
		sb, err := f.get(ctx, s, KindSignature, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, signing.Signature{}, ctx.Err()
			}
			f.log().Info("a sibling holds a version without central's signature: not taken", "sibling", s.ID, "version", id.Short(), "err", err)
			continue
		}
		sig, err := CheckVersion(f.CentralKey, id, b, sb)
		if err != nil {
			f.log().Warn("a sibling sent a manifest that does not check out: skipped", "sibling", s.ID, "endpoint", s.Endpoint, "version", id.Short(), "err", err)
			continue
		}
		return b, sig, nil
	}
	return nil, signing.Signature{}, notFound("manifest", id)
}

// CheckVersion checks a manifest and a signature object a sibling sent for version id: the
// manifest decodes and hashes to id, and central's key signed id.
func CheckVersion(key signing.PublicKey, id manifest.ID, encoded, sigObject []byte) (signing.Signature, error) {
	sig, err := signing.DecodeSignature(sigObject)
	if err != nil {
		return sig, fmt.Errorf("%w: signature of %s: %v", ErrBadObject, id.Short(), err)
	}
	m, err := manifest.Decode(encoded)
	if err != nil {
		return sig, fmt.Errorf("%w: manifest %s: %v", ErrBadObject, id.Short(), err)
	}
	if got := manifest.VersionID(m.Hash, encoded); got != id {
		return sig, fmt.Errorf("%w: manifest %s hashes to %s", ErrBadObject, id.Short(), got.Short())
	}
	if key.IsZero() {
		return sig, fmt.Errorf("%w: manifest %s: this server has no central key to check it with", ErrBadObject, id.Short())
	}
	if err := key.VerifyManifest(id, encoded, sig); err != nil {
		return sig, fmt.Errorf("%w: manifest %s: %v", ErrBadObject, id.Short(), err)
	}
	return sig, nil
}

func (f *Fetcher) list(ctx context.Context) ([]Sibling, error) {
	if f == nil || f.Siblings == nil {
		return nil, nil
	}
	list, err := f.Siblings(ctx)
	if err != nil {
		// The registry could not be asked: this server's own answer stands.
		f.log().Warn("the region's servers could not be listed; asking no sibling", "err", err)
		return nil, nil
	}
	return list, nil
}

// get asks sibling s for an object of kind, at most maxObject(kind) bytes.
func (f *Fetcher) get(ctx context.Context, s Sibling, kind string, id manifest.ID) ([]byte, error) {
	base, err := url.Parse(s.Endpoint)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("sibling %s: endpoint %q is not an http(s) URL", s.ID, s.Endpoint)
	}
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := base.JoinPath("v1", "sibling", kind, id.String())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	sign(req, f.Secret, f.from(), f.now())
	what := kind + " " + id.Short()
	resp, err := f.client().Do(req)
	if err != nil {
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.Endpoint, What: what, Err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &store.Error{Kind: store.ErrNotFound, Store: s.Endpoint, What: what}
	case resp.StatusCode != http.StatusOK:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.Endpoint, What: what,
			Err: fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))}
	}
	limit := maxObject(kind)
	if resp.ContentLength > limit {
		return nil, &store.Error{Kind: store.ErrCorrupt, Store: s.Endpoint, What: what, Err: fmt.Errorf("%d bytes, more than the %d of any %s", resp.ContentLength, limit, kind)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.Endpoint, What: what, Err: err}
	}
	if int64(len(b)) > limit {
		return nil, &store.Error{Kind: store.ErrCorrupt, Store: s.Endpoint, What: what, Err: fmt.Errorf("more than the %d bytes of any %s", limit, kind)}
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, &store.Error{Kind: store.ErrUnavailable, Store: s.Endpoint, What: what, Err: fmt.Errorf("cut short: %d of %d bytes", len(b), resp.ContentLength)}
	}
	return b, nil
}
