package signing

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"tms/manifest"
)

// A grant lets one region pull one version from another region's store for a short time.
// Central mints it with its private key; the serving region checks it with central's public
// key on every request. A region holds no key that mints grants, so it cannot open another
// region's store for itself.
//
// Form: "tmsg2." + base64url(JSON claims) + "." + base64url(ed25519 signature of the first two
// parts, the "tmsg2." prefix included: the prefix is the grant's signing domain).

const grantPrefix = "tmsg2"

// MaxGrantLen bounds the tokens VerifyGrant reads.
const MaxGrantLen = 1024

// Grant is what a token allows.
type Grant struct {
	Version manifest.ID `json:"v"`
	// Audience is the region the grant was minted for: the one that pulls.
	Audience string `json:"aud"`
	// Server is the region whose store the grant opens: it is good there only.
	Server  string    `json:"srv"`
	Expires time.Time `json:"exp"`
}

// ErrGrant marks every reason a token is refused.
var ErrGrant = errors.New("grant refused")

// MintGrant returns the token for g.
func (k *PrivateKey) MintGrant(g Grant) string {
	g.Expires = g.Expires.UTC().Truncate(time.Second)
	claims, _ := json.Marshal(g)
	body := grantPrefix + "." + base64.RawURLEncoding.EncodeToString(claims)
	return body + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(k.k, []byte(body)))
}

// VerifyGrant checks token's signature, that it opens server's store, and its expiry at now, and
// returns what it grants. The caller checks the version against the one asked for.
func (p PublicKey) VerifyGrant(token, server string, now time.Time) (Grant, error) {
	var g Grant
	if p.IsZero() {
		return g, fmt.Errorf("%w: this server has no central public key to check grants with", ErrGrant)
	}
	if len(token) > MaxGrantLen {
		return g, fmt.Errorf("%w: token longer than %d bytes", ErrGrant, MaxGrantLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != grantPrefix {
		return g, fmt.Errorf("%w: not a tms grant (want %s.<claims>.<signature>)", ErrGrant, grantPrefix)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(p.k, []byte(parts[0]+"."+parts[1]), sig) {
		return g, fmt.Errorf("%w: not signed by central's key %s", ErrGrant, p.ID())
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return g, fmt.Errorf("%w: bad claims encoding", ErrGrant)
	}
	if err := json.Unmarshal(claims, &g); err != nil || g.Version.IsZero() || g.Server == "" {
		return Grant{}, fmt.Errorf("%w: bad claims", ErrGrant)
	}
	if g.Server != server {
		return Grant{}, fmt.Errorf("%w: the grant opens region %q's store, not region %q's", ErrGrant, clip(g.Server), server)
	}
	if !now.Before(g.Expires) {
		return Grant{}, fmt.Errorf("%w: expired at %s", ErrGrant, g.Expires.Format(time.RFC3339))
	}
	return g, nil
}
