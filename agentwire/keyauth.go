package agentwire

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Requests an agent makes outside a task (its boot request, its command poll) are signed with
// the terminal's agent key, a secret the agent keeps and never sends (see state's agent keys):
//
//	Authorization: TMS-Agent mac=52:54:00:12:34:56, ts=1767000000, nonce=<22 chars>, sig=<43 chars>
//
// sig is base64url(HMAC-SHA256(key, "tms agent request v1\n" METHOD "\n" REQUEST-URI "\n" ts "\n"
// nonce "\n" hex(SHA-256(body)))). The region accepts a signature within MaxKeySkew of its clock
// and each nonce once, so a request read off the wire cannot be replayed or changed.

// KeyScheme is the Authorization scheme of key-signed requests.
const KeyScheme = "TMS-Agent"

// MaxKeySkew is how far a signed request's time may be from the region's.
const MaxKeySkew = 5 * time.Minute

// maxKeyAuth bounds the Authorization header a region parses.
const maxKeyAuth = 256

// KeyAuth is a parsed key signature.
type KeyAuth struct {
	MAC   string
	Time  time.Time
	Nonce string
	sig   []byte
}

// ErrKeyAuth marks every reason a key signature is refused.
var ErrKeyAuth = errors.New("agent key signature refused")

func keyMAC(key []byte, method, uri string, ts int64, nonce string, body []byte) []byte {
	bh := sha256.Sum256(body)
	h := hmac.New(sha256.New, key)
	fmt.Fprintf(h, "tms agent request v1\n%s\n%s\n%d\n%s\n%x", method, uri, ts, nonce, bh)
	return h.Sum(nil)
}

// SignRequest signs req, whose body is body, for terminal mac with its agent key.
func SignRequest(req *http.Request, mac string, key, body []byte, now time.Time) {
	n := make([]byte, 16)
	rand.Read(n)
	nonce := base64.RawURLEncoding.EncodeToString(n)
	ts := now.Unix()
	sig := keyMAC(key, req.Method, req.URL.RequestURI(), ts, nonce, body)
	req.Header.Set("Authorization", fmt.Sprintf("%s mac=%s, ts=%d, nonce=%s, sig=%s", KeyScheme, mac, ts, nonce, base64.RawURLEncoding.EncodeToString(sig)))
}

// IsKeySigned reports whether an Authorization header claims a key signature.
func IsKeySigned(h string) bool { return strings.HasPrefix(h, KeyScheme+" ") }

// ParseKeyAuth reads a key-signed Authorization header. It checks the form only; Verify checks
// the signature.
func ParseKeyAuth(h string) (KeyAuth, error) {
	var a KeyAuth
	if len(h) > maxKeyAuth {
		return a, fmt.Errorf("%w: Authorization header over %d bytes", ErrKeyAuth, maxKeyAuth)
	}
	rest, ok := strings.CutPrefix(h, KeyScheme+" ")
	if !ok {
		return a, fmt.Errorf("%w: not a %s signature", ErrKeyAuth, KeyScheme)
	}
	seen := map[string]bool{}
	for _, f := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || seen[k] || v == "" {
			return a, fmt.Errorf("%w: malformed field %q", ErrKeyAuth, f)
		}
		seen[k] = true
		switch k {
		case "mac":
			a.MAC = v
		case "ts":
			ts, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ts < 0 || ts > 1<<40 {
				return a, fmt.Errorf("%w: ts %q is not a Unix time", ErrKeyAuth, v)
			}
			a.Time = time.Unix(ts, 0)
		case "nonce":
			b, err := base64.RawURLEncoding.DecodeString(v)
			if err != nil || len(b) < 12 || len(b) > 32 {
				return a, fmt.Errorf("%w: bad nonce", ErrKeyAuth)
			}
			a.Nonce = v
		case "sig":
			b, err := base64.RawURLEncoding.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return a, fmt.Errorf("%w: bad signature encoding", ErrKeyAuth)
			}
			a.sig = b
		default:
			return a, fmt.Errorf("%w: unknown field %q", ErrKeyAuth, k)
		}
	}
	if a.MAC == "" || a.Time.IsZero() || a.Nonce == "" || a.sig == nil {
		return a, fmt.Errorf("%w: mac, ts, nonce and sig are all required", ErrKeyAuth)
	}
	return a, nil
}

// Verify checks the signature of a request (method, request URI, body) made with key at a time
// within MaxKeySkew of now. Replays within that window are the caller's to refuse (by Nonce).
func (a KeyAuth) Verify(key []byte, method, uri string, body []byte, now time.Time) error {
	if d := now.Sub(a.Time); d > MaxKeySkew || d < -MaxKeySkew {
		return fmt.Errorf("%w: signed at %s, %s from the region's clock (at most %s): check the terminal's clock",
			ErrKeyAuth, a.Time.UTC().Format(time.RFC3339), d.Round(time.Second), MaxKeySkew)
	}
	if !hmac.Equal(a.sig, keyMAC(key, method, uri, a.Time.Unix(), a.Nonce, body)) {
		return fmt.Errorf("%w: the signature does not match the terminal's agent key", ErrKeyAuth)
	}
	return nil
}
