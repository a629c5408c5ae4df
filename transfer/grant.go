package transfer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"tms/manifest"
)

// A grant lets one region pull one version from another region's store for a short time.
// Central mints it with a key it shares with the regions (config), and the serving region
// checks it on every request: the peer can read that version's manifest and chunks and
// nothing else, and only until the grant expires.
//
// Form: "tmsg1." + base64url(JSON claims) + "." + base64url(HMAC-SHA256(key, first two parts)).

const grantPrefix = "tmsg1"

// MaxGrantLen bounds the tokens Verify reads.
const MaxGrantLen = 1024

// Grant is what a token allows.
type Grant struct {
	Version manifest.ID `json:"v"`
	// Audience is the region the grant was minted for.
	Audience string    `json:"aud"`
	Expires  time.Time `json:"exp"`
}

// ErrGrant marks every reason a token is refused.
var ErrGrant = errors.New("grant refused")

// Signer mints and checks grants with one key.
type Signer struct{ key []byte }

// NewSigner returns a signer for key, which must hold at least 32 bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("grant key has %d bytes, want at least 32", len(key))
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

func (s *Signer) mac(b []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write(b)
	return h.Sum(nil)
}

// Mint returns the token for g.
func (s *Signer) Mint(g Grant) string {
	g.Expires = g.Expires.UTC().Truncate(time.Second)
	claims, _ := json.Marshal(g)
	body := grantPrefix + "." + base64.RawURLEncoding.EncodeToString(claims)
	return body + "." + base64.RawURLEncoding.EncodeToString(s.mac([]byte(body)))
}

// Verify checks token's signature and expiry at now and returns what it grants.
func (s *Signer) Verify(token string, now time.Time) (Grant, error) {
	var g Grant
	if len(token) > MaxGrantLen {
		return g, fmt.Errorf("%w: token longer than %d bytes", ErrGrant, MaxGrantLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != grantPrefix {
		return g, fmt.Errorf("%w: not a tms grant", ErrGrant)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, s.mac([]byte(parts[0]+"."+parts[1]))) {
		return g, fmt.Errorf("%w: bad signature", ErrGrant)
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return g, fmt.Errorf("%w: bad claims encoding", ErrGrant)
	}
	if err := json.Unmarshal(claims, &g); err != nil || g.Version.IsZero() {
		return Grant{}, fmt.Errorf("%w: bad claims", ErrGrant)
	}
	if !now.Before(g.Expires) {
		return Grant{}, fmt.Errorf("%w: expired at %s", ErrGrant, g.Expires.Format(time.RFC3339))
	}
	return g, nil
}
