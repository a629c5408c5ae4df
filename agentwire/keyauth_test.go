package agentwire

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func signed(t testing.TB, key []byte, body []byte, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", "http://region/v1/agent/boot?x=1", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	SignRequest(req, "52:54:00:12:34:56", key, body, at)
	return req
}

func TestKeySignatures(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	now := time.Now()
	body := []byte(`{"mac":"52:54:00:12:34:56"}`)
	req := signed(t, key, body, now)
	a, err := ParseKeyAuth(req.Header.Get("Authorization"))
	if err != nil || a.MAC != "52:54:00:12:34:56" || a.Time.Unix() != now.Unix() || a.Nonce == "" {
		t.Fatalf("parse: %+v, %v", a, err)
	}
	if err := a.Verify(key, "POST", "/v1/agent/boot?x=1", body, now); err != nil {
		t.Fatalf("verify: %v", err)
	}
	other := bytes.Repeat([]byte{8}, 32)
	for _, tc := range []struct {
		name      string
		key       []byte
		method    string
		uri       string
		body      []byte
		at        time.Time
		wantInErr string
	}{
		{"another key", other, "POST", "/v1/agent/boot?x=1", body, now, "does not match"},
		{"another method", key, "GET", "/v1/agent/boot?x=1", body, now, "does not match"},
		{"another URI", key, "POST", "/v1/agent/boot?x=2", body, now, "does not match"},
		{"another body", key, "POST", "/v1/agent/boot?x=1", []byte(`{"mac":"52:54:00:12:34:57"}`), now, "does not match"},
		{"too late", key, "POST", "/v1/agent/boot?x=1", body, now.Add(MaxKeySkew + time.Minute), "check the terminal's clock"},
		{"too early", key, "POST", "/v1/agent/boot?x=1", body, now.Add(-MaxKeySkew - time.Minute), "check the terminal's clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Verify(tc.key, tc.method, tc.uri, tc.body, tc.at)
			if !errors.Is(err, ErrKeyAuth) || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("verify: %v; want %q", err, tc.wantInErr)
			}
		})
	}
	if b := signed(t, key, body, now).Header.Get("Authorization"); b == req.Header.Get("Authorization") {
		t.Fatal("two signatures of one request share a nonce")
	}
}

func TestParseKeyAuthRefusesMalformedHeaders(t *testing.T) {
	good := signed(t, make([]byte, 32), nil, time.Now()).Header.Get("Authorization")
	for _, h := range []string{
		"", "Bearer x", KeyScheme, KeyScheme + " mac=a", good + ", mac=b", strings.Replace(good, "ts=", "ts=-", 1),
		strings.Replace(good, "sig=", "sig=!", 1), strings.Replace(good, "nonce=", "nonce=!", 1), good + ", extra=1",
		KeyScheme + " " + strings.Repeat("a", 300),
	} {
		if _, err := ParseKeyAuth(h); !errors.Is(err, ErrKeyAuth) {
			t.Errorf("ParseKeyAuth(%q): %v", h, err)
		}
	}
}

// FuzzParseKeyAuth parses Authorization headers as a region reads them from anything on the
// network: it never panics, and what it accepts has every field.
func FuzzParseKeyAuth(f *testing.F) {
	f.Add(signed(f, make([]byte, 32), nil, time.Now()).Header.Get("Authorization"))
	f.Add(KeyScheme + " mac=x, ts=1, nonce=AAAAAAAAAAAAAAAA, sig=AAAA")
	f.Add("Bearer abc")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := ParseKeyAuth(h)
		if err != nil {
			return
		}
		if a.MAC == "" || a.Nonce == "" || len(a.sig) != 32 || a.Time.IsZero() {
			t.Fatalf("accepted %q as %+v", h, a)
		}
	})
}
