// Package sibling lets the servers of one region (several `tms region` processes with the same
// region id, one shared inventory database, a store each) lend each other what one store lacks:
// a chunk, or a version's manifest with central's signature of it.
//
// A server whose own store lacks an object asks its healthy siblings, in order, over HTTP
// (Handler's routes, on the region's HTTP service), and checks what comes back before it
// stores or serves it: a chunk against its id (the hash of its uncompressed bytes), a manifest
// against its id and central's signature. A sibling that sends bad bytes is skipped for that
// object, counted (tms_chunks_refused_total{path="sibling"}) and logged, and the next one is
// asked. ReadThrough puts this under a store: every read of the server's store (the agent API,
// the swarm's seed, a peer region's pull, the worker's activities) finds what a sibling holds.
//
// Requests between siblings carry a token made with the region's internal secret, which the
// servers share through their database (state.Inventory.SiblingSecret) and terminals never see:
// an HMAC of the method, the path, the asking server and an expiry minutes away.
//
//	f := &sibling.Fetcher{Siblings: list, Secret: secret, CentralKey: pub}
//	st := store.New(sibling.ReadThrough(dir, f), store.Options{})
//	(&sibling.Handler{Backend: dir, Secret: secret}).Routes(mux)
package sibling

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scheme is the Authorization scheme of a sibling's token.
const Scheme = "TMS-Sibling"

// TokenTTL is how long a token is good for; MaxSkew how far apart two siblings' clocks may be.
const (
	TokenTTL = 2 * time.Minute
	MaxSkew  = time.Minute
)

// maxFrom bounds the asking server's name in a token.
const maxFrom = 128

// ErrToken marks every reason a sibling's token is refused.
var ErrToken = errors.New("sibling token refused")

// Token is a parsed token: who asks, and until when the token is good.
type Token struct {
	From    string
	Expires time.Time
	mac     []byte
}

// Sign returns the Authorization header value for a request of method on path, made by server
// from, good for TokenTTL from now.
func Sign(secret []byte, from, method, path string, now time.Time) string {
	exp := now.Add(TokenTTL).Unix()
	return Scheme + " " + from + " " + strconv.FormatInt(exp, 10) + " " + hex.EncodeToString(sum(secret, from, method, path, exp))
}

func sum(secret []byte, from, method, path string, exp int64) []byte {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "tms sibling v1\n%s\n%s\n%s\n%d\n", method, path, from, exp)
	return m.Sum(nil)
}

// ParseToken reads an Authorization header value. It checks the form only: Check checks the
// MAC and the time.
func ParseToken(h string) (Token, error) {
	rest, ok := strings.CutPrefix(h, Scheme+" ")
	if !ok || len(h) > len(Scheme)+1+maxFrom+1+20+1+2*sha256.Size {
		return Token{}, fmt.Errorf("%w: not a %s token", ErrToken, Scheme)
	}
	f := strings.Split(rest, " ")
	if len(f) != 3 {
		return Token{}, fmt.Errorf("%w: want \"%s FROM EXPIRES MAC\"", ErrToken, Scheme)
	}
	from := f[0]
	if from == "" || len(from) > maxFrom {
		return Token{}, fmt.Errorf("%w: the asking server's name is empty or over %d bytes", ErrToken, maxFrom)
	}
	for i := 0; i < len(from); i++ {
		if c := from[i]; c <= ' ' || c >= 0x7f {
			return Token{}, fmt.Errorf("%w: the asking server's name has a byte 0x%02x", ErrToken, c)
		}
	}
	if len(f[1]) == 0 || len(f[1]) > 19 || strings.TrimLeft(f[1], "0123456789") != "" {
		return Token{}, fmt.Errorf("%w: expiry %.20q is not a Unix time", ErrToken, f[1])
	}
	exp, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return Token{}, fmt.Errorf("%w: expiry: %v", ErrToken, err)
	}
	mac, err := hex.DecodeString(f[2])
	if err != nil || len(mac) != sha256.Size {
		return Token{}, fmt.Errorf("%w: the MAC is not %d hex bytes", ErrToken, sha256.Size)
	}
	return Token{From: from, Expires: time.Unix(exp, 0), mac: mac}, nil
}

// Check checks an Authorization header value for a request of method on path at now, and
// returns who made it.
func Check(secret []byte, h, method, path string, now time.Time) (Token, error) {
	if len(secret) == 0 {
		return Token{}, fmt.Errorf("%w: this server has no region secret", ErrToken)
	}
	t, err := ParseToken(h)
	if err != nil {
		return t, err
	}
	if !hmac.Equal(t.mac, sum(secret, t.From, method, path, t.Expires.Unix())) {
		return t, fmt.Errorf("%w: the MAC does not match (another region's secret, or another request's token)", ErrToken)
	}
	if now.After(t.Expires.Add(MaxSkew)) {
		return t, fmt.Errorf("%w: expired at %s", ErrToken, t.Expires.UTC().Format(time.RFC3339))
	}
	if t.Expires.After(now.Add(TokenTTL + MaxSkew)) {
		return t, fmt.Errorf("%w: good until %s, longer than a token lives", ErrToken, t.Expires.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// sign sets a request's token.
func sign(r *http.Request, secret []byte, from string, now time.Time) {
	r.Header.Set("Authorization", Sign(secret, from, r.Method, r.URL.EscapedPath(), now))
}
