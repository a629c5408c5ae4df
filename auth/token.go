package auth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"tms/signing"
)

// Token form: "tmsu1." + base64url(JSON claims) + "." + base64url(ed25519 signature of the
// first two parts, prefix included), signed by central's key (signing.PrivateKey). There is no
// algorithm field: ed25519 with central's key is the only one a token may use.

// MaxTokenLen bounds the tokens Verify reads (a token with 64 regions fits easily).
const MaxTokenLen = 4096

// MaxClockSkew is how far in the future a token's issued-at may lie (servers' clocks differ).
const MaxClockSkew = 2 * time.Minute

// MaxTokenLife bounds a token's life: a region's token (tms region token --expires) at most a year.
const MaxTokenLife = 366 * 24 * time.Hour

// DefaultLoginLife is how long a login lasts.
const DefaultLoginLife = 12 * time.Hour

// Claims are what a token says about its holder.
type Claims struct {
	Subject string   `json:"sub"`
	Role    Role     `json:"role"`
	Regions []string `json:"regions,omitempty"`
	// IssuedAt and Expires are whole seconds, UTC.
	IssuedAt time.Time `json:"iat"`
	Expires  time.Time `json:"exp"`
	// ID names the token (random), for the log.
	ID string `json:"jti"`
}

// Grants reports whether the claims grant region.
func (c *Claims) Grants(region string) bool { return slices.Contains(c.Regions, region) }

// ErrToken marks every reason a token is refused; ErrExpired (which wraps it) one that expired.
var (
	ErrToken   = errors.New("token refused")
	ErrExpired = fmt.Errorf("%w: expired", ErrToken)
)

// ExpiredError says when a token expired.
type ExpiredError struct{ At time.Time }

func (e *ExpiredError) Error() string {
	return "your login expired at " + e.At.Local().Format(time.DateTime) + ": run tms login"
}
func (e *ExpiredError) Unwrap() error { return ErrExpired }

// Mint signs c as a token valid from now for life. It fills in IssuedAt, Expires and ID.
func Mint(k *signing.PrivateKey, c Claims, now time.Time, life time.Duration) (string, Claims, error) {
	if life <= 0 || life > MaxTokenLife {
		return "", c, fmt.Errorf("token life %s: want more than 0 and at most %s", life, MaxTokenLife)
	}
	c.IssuedAt = now.UTC().Truncate(time.Second)
	c.Expires = c.IssuedAt.Add(life)
	c.ID = rand.Text()[:16]
	if err := c.check(); err != nil {
		return "", c, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", c, err
	}
	body := signing.UserTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	tok := body + "." + base64.RawURLEncoding.EncodeToString(k.SignUserToken(body))
	if len(tok) > MaxTokenLen {
		return "", c, fmt.Errorf("token for %s would be %d bytes, more than %d: grant fewer regions", c.Subject, len(tok), MaxTokenLen)
	}
	return tok, c, nil
}

// check validates claims, wherever they came from.
func (c *Claims) check() error {
	if c.Role == RoleWorker {
		// Workers are named for what they serve ("central", "region:room-1"), not users.
		if c.Subject == "" || len(c.Subject) > MaxNameLen+8 {
			return fmt.Errorf("worker name %q: empty or too long", clip(c.Subject))
		}
	} else if err := ValidateUserName(c.Subject); err != nil {
		return err
	}
	if !c.Role.valid() {
		return fmt.Errorf("role %q unknown", clip(string(c.Role)))
	}
	if len(c.Regions) > MaxRegions {
		return fmt.Errorf("%d regions, at most %d", len(c.Regions), MaxRegions)
	}
	for _, r := range c.Regions {
		if err := ValidateRegion(r); err != nil {
			return err
		}
	}
	if !c.Expires.After(c.IssuedAt) || c.Expires.Sub(c.IssuedAt) > MaxTokenLife {
		return fmt.Errorf("token life from %s to %s is not within (0, %s]", c.IssuedAt.Format(time.RFC3339), c.Expires.Format(time.RFC3339), MaxTokenLife)
	}
	return nil
}

// Verify checks tok (with or without a "Bearer " prefix) against central's public key at now,
// and returns its claims. Every refusal wraps ErrToken; an expired token's is an *ExpiredError.
func Verify(pub signing.PublicKey, tok string, now time.Time) (*Claims, error) {
	tok = strings.TrimPrefix(tok, "Bearer ")
	if len(tok) > MaxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrToken, MaxTokenLen)
	}
	body, sig64, ok := strings.Cut(tok, ".")
	if ok {
		// body is "tmsu1" so far: the signed part is "tmsu1.<claims>".
		var claims64 string
		claims64, sig64, ok = strings.Cut(sig64, ".")
		body += "." + claims64
		if strings.Contains(sig64, ".") {
			ok = false
		}
	}
	if !ok || !strings.HasPrefix(body, signing.UserTokenPrefix) {
		return nil, fmt.Errorf("%w: not a tms token (want %s<claims>.<signature>)", ErrToken, signing.UserTokenPrefix)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sig64)
	if err != nil || !pub.VerifyUserToken(body, sig) {
		return nil, fmt.Errorf("%w: not signed by central's key %s", ErrToken, pub.ID())
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimPrefix(body, signing.UserTokenPrefix))
	if err != nil {
		return nil, fmt.Errorf("%w: bad claims encoding", ErrToken)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	var c Claims
	if err := dec.Decode(&c); err != nil || dec.More() {
		return nil, fmt.Errorf("%w: bad claims", ErrToken)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrToken, err)
	}
	if c.IssuedAt.After(now.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("%w: issued at %s, in the future (clocks more than %s apart?)", ErrToken, c.IssuedAt.Format(time.RFC3339), MaxClockSkew)
	}
	if !now.Before(c.Expires) {
		return nil, &ExpiredError{At: c.Expires}
	}
	return &c, nil
}
