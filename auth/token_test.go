package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"tms/signing"
)

func mustKey(t testing.TB) *signing.PrivateKey {
	t.Helper()
	k, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func TestVerify(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	alice := Claims{Subject: "alice", Role: RoleOperator, Regions: []string{"region-a"}}
	good, _, err := Mint(k, alice, t0, DefaultLoginLife)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, _ := Mint(other, alice, t0, DefaultLoginLife)
	body, sig, _ := strings.Cut(strings.TrimPrefix(good, signing.UserTokenPrefix), ".")
	flip := []byte(good)
	flip[len(signing.UserTokenPrefix)+5] ^= 0x01
	// Claims re-encoded as admin under the original signature.
	raw, _ := base64.RawURLEncoding.DecodeString(body)
	admin := strings.Replace(string(raw), `"operator"`, `"admin"`, 1)
	promoted := signing.UserTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(admin)) + "." + sig
	cases := []struct {
		name    string
		tok     string
		now     time.Time
		want    string // "" = valid
		expired bool
	}{
		{"valid", good, t0.Add(time.Hour), "", false},
		{"valid with Bearer prefix", "Bearer " + good, t0.Add(time.Hour), "", false},
		{"expired at its expiry", good, t0.Add(DefaultLoginLife), "expired", true},
		{"issued in the future beyond the skew", good, t0.Add(-MaxClockSkew - time.Second), "in the future", false},
		{"issued in the future within the skew", good, t0.Add(-MaxClockSkew), "", false},
		{"signed by another key", forged, t0, "not signed by central's key", false},
		{"a flipped byte in the claims", string(flip), t0, "not signed", false},
		{"claims changed to admin", promoted, t0, "not signed", false},
		{"no signature", signing.UserTokenPrefix + body, t0, "not a tms token", false},
		{"an extra part", good + ".x", t0, "not a tms token", false},
		{"another prefix", "tmsg2." + body + "." + sig, t0, "not a tms token", false},
		{"empty", "", t0, "not a tms token", false},
		{"too long", good + strings.Repeat("A", MaxTokenLen), t0, "longer than", false},
		{"signature with padding", good + "=", t0, "not signed", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Verify(k.Public(), c.tok, c.now)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got.Subject != "alice" || got.Role != RoleOperator || !got.Grants("region-a") || got.Grants("region-b") {
					t.Fatalf("claims %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrToken) {
				t.Fatalf("err %v, want one saying %q wrapping ErrToken", err, c.want)
			}
			var exp *ExpiredError
			if errors.As(err, &exp) != c.expired {
				t.Fatalf("err %v: expired %v, want %v", err, !c.expired, c.expired)
			}
		})
	}
}

func TestMintRefuses(t *testing.T) {
	k := mustKey(t)
	many := make([]string, MaxRegions+1)
	for i := range many {
		many[i] = "r" + strings.Repeat("x", i%5)
	}
	cases := []struct {
		name string
		c    Claims
		life time.Duration
		want string
	}{
		{"a bad user name", Claims{Subject: "Alice!", Role: RoleViewer}, time.Hour, "user name"},
		{"an unknown role", Claims{Subject: "alice", Role: "root"}, time.Hour, "role"},
		{"a bad region", Claims{Subject: "alice", Role: RoleOperator, Regions: []string{"Region A"}}, time.Hour, "region id"},
		{"too many regions", Claims{Subject: "alice", Role: RoleOperator, Regions: many}, time.Hour, "regions, at most"},
		{"no life", Claims{Subject: "alice", Role: RoleViewer}, 0, "token life"},
		{"too long a life", Claims{Subject: "alice", Role: RoleViewer}, MaxTokenLife + time.Hour, "token life"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := Mint(k, c.c, t0, c.life); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	k := mustKey(f)
	good, _, _ := Mint(k, Claims{Subject: "alice", Role: RoleOperator, Regions: []string{"region-a"}}, t0, time.Hour)
	w, _, _ := Mint(k, Claims{Subject: "region:room-1", Role: RoleWorker, Regions: []string{"room-1"}}, t0, time.Hour)
	for _, s := range []string{good, w, "", "tmsu1.", "tmsu1..", "Bearer " + good, good[:len(good)-3], "tmsu1.e30.AAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Verify(k.Public(), tok, t0)
		if err == nil {
			if c.check() != nil {
				t.Fatalf("accepted bad claims %+v", c)
			}
			if tok != good && tok != w && strings.TrimPrefix(tok, "Bearer ") != good && strings.TrimPrefix(tok, "Bearer ") != w {
				t.Fatalf("accepted a token central did not mint: %q", tok)
			}
		}
	})
}

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := HashPassword("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no per-user salt")
	}
	if err := CheckPassword(h, "correct horse battery"); err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	for _, wrong := range []string{"correct horse batterY", "", strings.Repeat("x", MaxPasswordLen+1)} {
		if err := CheckPassword(h, wrong); !errors.Is(err, ErrPassword) {
			t.Fatalf("wrong password %q: %v", wrong, err)
		}
	}
	if _, err := HashPassword("short"); err == nil {
		t.Fatal("a 5-character password was accepted")
	}
	if err := CheckPassword("$2a$10$bcrypt", "x"); err == nil || errors.Is(err, ErrPassword) {
		t.Fatalf("a damaged hash: %v", err)
	}
}

func TestLimiter(t *testing.T) {
	l := &Limiter{Burst: 3, Every: time.Minute, MaxKeys: 2}
	for i := range 3 {
		if ok, _ := l.Allow("alice", t0); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if ok, wait := l.Allow("alice", t0); ok || wait != time.Minute {
		t.Fatalf("4th attempt: ok %v wait %s", ok, wait)
	}
	if ok, _ := l.Allow("bob", t0); !ok {
		t.Fatal("another key is limited by alice's attempts")
	}
	if ok, _ := l.Allow("carol", t0); ok {
		t.Fatal("a third key was taken beyond MaxKeys")
	}
	if ok, _ := l.Allow("alice", t0.Add(time.Minute)); !ok {
		t.Fatal("no attempt back after a minute")
	}
	if ok, _ := l.Allow("carol", t0.Add(time.Hour)); !ok {
		t.Fatal("idle keys were not forgotten")
	}
}

func TestWorkerTokensRefresh(t *testing.T) {
	k := mustKey(t)
	now := t0
	w := &WorkerTokens{Key: k, Name: "central", Life: time.Hour, Now: func() time.Time { return now }}
	first, err := w.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	now = t0.Add(39 * time.Minute)
	if again, _ := w.Token(t.Context()); again != first {
		t.Fatal("a fresh token before two thirds of the life passed")
	}
	now = t0.Add(41 * time.Minute)
	next, _ := w.Token(t.Context())
	if next == first {
		t.Fatal("no fresh token with less than a third of the life left")
	}
	c, err := Verify(k.Public(), next, now)
	if err != nil || c.Role != RoleWorker || c.Subject != "central" {
		t.Fatalf("claims %+v, err %v", c, err)
	}
}
