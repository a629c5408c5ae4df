package swarm

import (
	"crypto/ed25519"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestTokenOpensOnlyWhatItNames(t *testing.T) {
	c := newClock()
	s := &Signer{Now: c.now}
	pub, _, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	ip := netip.MustParseAddr("10.98.0.11")
	tok, err := s.Sign(Token{Version: testVersion, Member: "task-1", IP: ip, Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.PublicKeys()
	if _, err := CheckToken(keys, tok, c.now(), testVersion, ip, pub); err != nil {
		t.Fatalf("a good token was refused: %v", err)
	}
	for name, check := range map[string]func() error{
		"another version": func() error { _, err := CheckToken(keys, tok, c.now(), [32]byte{9}, ip, pub); return err },
		"another address": func() error {
			_, err := CheckToken(keys, tok, c.now(), testVersion, netip.MustParseAddr("10.98.0.12"), pub)
			return err
		},
		"another key":  func() error { _, err := CheckToken(keys, tok, c.now(), testVersion, ip, other); return err },
		"expired":      func() error { _, err := CheckToken(keys, tok, c.now().Add(TokenTTL), testVersion, ip, pub); return err },
		"unknown keys": func() error { _, err := CheckToken([][]byte{other}, tok, c.now(), testVersion, ip, pub); return err },
		"altered": func() error {
			// The first character: its six bits are all the body's (a changed last character
			// of the signature may decode to the same bytes).
			first := "A"
			if tok[0] == 'A' {
				first = "B"
			}
			_, err := CheckToken(keys, first+tok[1:], c.now(), testVersion, ip, pub)
			return err
		},
		"too long": func() error {
			_, err := CheckToken(keys, strings.Repeat("x", 2000), c.now(), testVersion, ip, pub)
			return err
		},
	} {
		if err := check(); !errors.Is(err, ErrToken) {
			t.Errorf("%s: %v, want ErrToken", name, err)
		}
	}
}

func TestSignerRotatesAndKeepsThePreviousKey(t *testing.T) {
	c := newClock()
	s := &Signer{Now: c.now, Rotate: time.Hour}
	tok, _ := s.Sign(Token{Version: testVersion, Member: "m", IP: netip.MustParseAddr("10.0.0.1"), Key: make([]byte, 32)})
	c.add(time.Hour + time.Minute)
	keys, _ := s.PublicKeys()
	if len(keys) != 2 {
		t.Fatalf("%d keys after a rotation, want 2", len(keys))
	}
	if _, err := VerifyToken(keys, tok, c.now().Add(-time.Hour+5*time.Minute)); err != nil {
		t.Fatalf("a token of the previous key: %v", err)
	}
}

func FuzzVerifyToken(f *testing.F) {
	s := &Signer{}
	tok, _ := s.Sign(Token{Version: testVersion, Member: "m", IP: netip.MustParseAddr("10.0.0.1"), Key: make([]byte, 32)})
	keys, _ := s.PublicKeys()
	f.Add(tok)
	f.Add("e30.AAAA")
	f.Add(".")
	f.Fuzz(func(t *testing.T, text string) {
		if tk, err := VerifyToken(keys, text, time.Now()); err == nil && (tk.Member == "" || len(tk.Key) != 32) {
			t.Fatalf("accepted %q as %+v", text, tk)
		}
	})
}
