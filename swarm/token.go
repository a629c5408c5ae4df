package swarm

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"tms/agentwire"
	"tms/manifest"
)

// Token is a member's peer token: what a member shows a peer to get chunks of Version. The
// region signs it; a peer serves the holder only if the token names the version the peer
// writes, the address the request comes from and the key the requester's TLS certificate
// proves it holds, and has not expired. A bystander who reads a token cannot use it: the TLS
// handshake needs the member's private key, which never leaves the member.
type Token struct {
	Version manifest.ID `json:"v"`
	Member  string      `json:"m"`
	IP      netip.Addr  `json:"ip"`
	Key     []byte      `json:"k"`
	Expires int64       `json:"exp"` // Unix seconds
}

// TokenTTL is how long a peer token is good for; members get a fresh one with each call to
// the tracker.
const TokenTTL = 10 * time.Minute

// ErrToken marks a peer token that does not open what it was shown for.
var ErrToken = errors.New("peer token refused")

// Signer signs peer tokens with a key of its own, made when it is created and replaced every
// Rotate (the previous key is still published until the tokens it signed have expired). A
// region makes one when it starts: nothing about it is stored, so a restarted region signs with
// new keys and members learn them at their next call.
type Signer struct {
	// Rotate is how often a new key is made (default 1 h; at least TokenTTL).
	Rotate time.Duration
	Now    func() time.Time

	mu      sync.Mutex
	cur     ed25519.PrivateKey
	prev    ed25519.PrivateKey
	created time.Time
}

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// keys returns the current key and the previous one (nil if none), making or rotating them.
func (s *Signer) keys() (cur, prev ed25519.PrivateKey, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rotate := max(s.Rotate, TokenTTL)
	if s.Rotate == 0 {
		rotate = time.Hour
	}
	now := s.now()
	if s.cur == nil || now.Sub(s.created) >= rotate {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		if s.cur != nil && now.Sub(s.created) < rotate+TokenTTL {
			s.prev = s.cur
		} else {
			s.prev = nil
		}
		s.cur, s.created = k, now
	}
	return s.cur, s.prev, nil
}

// PublicKeys returns the keys whose tokens are still good, current first.
func (s *Signer) PublicKeys() ([][]byte, error) {
	cur, prev, err := s.keys()
	if err != nil {
		return nil, err
	}
	out := [][]byte{cur.Public().(ed25519.PublicKey)}
	if prev != nil {
		out = append(out, prev.Public().(ed25519.PublicKey))
	}
	return out, nil
}

// Sign returns t, good for TokenTTL from now, in its text form.
func (s *Signer) Sign(t Token) (string, error) {
	cur, _, err := s.keys()
	if err != nil {
		return "", err
	}
	t.Expires = s.now().Add(TokenTTL).Unix()
	body, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(cur, body)
	return base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// VerifyToken checks a token's signature against keys and its expiry, and returns what it
// says. It does not check what the token is shown for (CheckToken does).
func VerifyToken(keys [][]byte, text string, now time.Time) (Token, error) {
	var t Token
	if len(text) > agentwire.MaxPeerToken {
		return t, fmt.Errorf("%w: %d bytes, at most %d", ErrToken, len(text), agentwire.MaxPeerToken)
	}
	b64body, b64sig, ok := strings.Cut(text, ".")
	if !ok {
		return t, fmt.Errorf("%w: not BODY.SIGNATURE", ErrToken)
	}
	body, err := base64.RawURLEncoding.DecodeString(b64body)
	if err != nil {
		return t, fmt.Errorf("%w: body: %v", ErrToken, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(b64sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return t, fmt.Errorf("%w: the signature is not %d bytes of base64", ErrToken, ed25519.SignatureSize)
	}
	signed := false
	for _, k := range keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, body, sig) {
			signed = true
			break
		}
	}
	if !signed {
		return t, fmt.Errorf("%w: not signed by the region's current keys", ErrToken)
	}
	if err := json.Unmarshal(body, &t); err != nil {
		return t, fmt.Errorf("%w: %v", ErrToken, err)
	}
	if len(t.Key) != ed25519.PublicKeySize || !t.IP.IsValid() || t.Member == "" {
		return t, fmt.Errorf("%w: it names no member, address or key", ErrToken)
	}
	if now.Unix() >= t.Expires {
		return t, fmt.Errorf("%w: it expired at %s", ErrToken, time.Unix(t.Expires, 0).UTC().Format(time.DateTime))
	}
	return t, nil
}

// CheckToken verifies a token shown by a requester from address ip whose TLS certificate holds
// key, for a chunk of version v.
func CheckToken(keys [][]byte, text string, now time.Time, v manifest.ID, ip netip.Addr, key ed25519.PublicKey) (Token, error) {
	t, err := VerifyToken(keys, text, now)
	if err != nil {
		return t, err
	}
	switch {
	case t.Version != v:
		return t, fmt.Errorf("%w: it opens version %s, this peer serves %s", ErrToken, t.Version.Short(), v.Short())
	case t.IP != ip.Unmap():
		return t, fmt.Errorf("%w: it was given to %s, the request comes from %s", ErrToken, t.IP, ip)
	case !key.Equal(ed25519.PublicKey(t.Key)):
		return t, fmt.Errorf("%w: the requester's certificate does not hold the token's key", ErrToken)
	}
	return t, nil
}
