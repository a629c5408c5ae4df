package signing

import (
	"crypto/ed25519"
	"strings"
)

// UserTokenPrefix starts every user token (package auth mints and reads them): "tmsu1." +
// base64url(claims) + "." + base64url(signature of everything before the last dot). Like a
// grant's prefix, it is the token's signing domain: a grant or a version signature never
// verifies as a user token.
const UserTokenPrefix = "tmsu1."

// SignUserToken signs body, which must start with UserTokenPrefix (else it returns nil, and
// no token made from it verifies).
func (k *PrivateKey) SignUserToken(body string) []byte {
	if !strings.HasPrefix(body, UserTokenPrefix) {
		return nil
	}
	return ed25519.Sign(k.k, []byte(body))
}

// VerifyUserToken reports whether sig is p's signature of body, which must start with
// UserTokenPrefix.
func (p PublicKey) VerifyUserToken(body string, sig []byte) bool {
	return !p.IsZero() && strings.HasPrefix(body, UserTokenPrefix) && len(sig) == ed25519.SignatureSize &&
		ed25519.Verify(p.k, []byte(body), sig)
}
