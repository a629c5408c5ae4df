package state

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEnrollTokens(t *testing.T) { forEachBackend(t, testEnrollTokens) }

func testEnrollTokens(t *testing.T) {
	ctx := context.Background()
	inv, err := OpenInventory(ctx, testDB(t, "inv.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	for mac, name := range map[string]string{"52:54:00:00:00:01": "pc1", "52:54:00:00:00:02": "pc2", "52:54:00:00:00:03": "pc3"} {
		if err := inv.Enroll(ctx, mac, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := inv.CreateGroup(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	if err := inv.AddToGroup(ctx, "lab", "pc1", "pc2"); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.IssueAgentKey(ctx, "52:54:00:00:00:02"); err != nil {
		t.Fatal(err)
	}
	lab, labHash := NewEnrollToken()
	if err := inv.AddEnrollToken(ctx, EnrollToken{Hash: labHash, Group: "lab", Expires: now.Add(time.Hour)}, now); err != nil {
		t.Fatal(err)
	}
	rekey, rekeyHash := NewEnrollToken()
	if err := inv.AddEnrollToken(ctx, EnrollToken{Hash: rekeyHash, Rekey: true, Expires: now.Add(time.Hour)}, now); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		token string
		mac   string
		at    time.Time
		want  string // empty: a key
	}{
		{"a lab terminal without a key gets one", lab, "52:54:00:00:00:01", now, ""},
		{"the same terminal again is refused", lab, "52:54:00:00:00:01", now, "already used this token"},
		{"a terminal that has a key is refused", lab, "52:54:00:00:00:02", now, "already has an agent key"},
		{"a terminal outside the token's group is refused", lab, "52:54:00:00:00:03", now, "not in group lab"},
		{"a terminal not enrolled is refused", rekey, "52:54:00:00:00:09", now, "is not enrolled"},
		{"a re-keying token replaces a key", rekey, "52:54:00:00:00:02", now, ""},
		{"an expired token is refused", rekey, "52:54:00:00:00:03", now.Add(2 * time.Hour), "expired at 2026-12-02T09:00:00Z"},
		{"an unknown token is refused", "tms-enroll-guess", "52:54:00:00:00:03", now, "no such token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := inv.RedeemEnrollToken(ctx, tc.token, tc.mac, tc.at)
			if tc.want == "" {
				if err != nil || len(key) != AgentKeySize {
					t.Fatalf("%x, %v", key, err)
				}
				if got, err := inv.AgentKey(ctx, tc.mac); err != nil || string(got) != string(key) {
					t.Fatalf("the key traded is not the terminal's: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrTokenRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		tok  EnrollToken
		want string
	}{
		{"a malformed hash", EnrollToken{Hash: "abc", Expires: now.Add(time.Hour)}, "64 hex digits"},
		{"an expiry in the past", EnrollToken{Hash: labHash[:63] + "0", Expires: now.Add(-time.Minute)}, "at most"},
		{"a TTL over a week", EnrollToken{Hash: labHash[:63] + "0", Expires: now.Add(8 * 24 * time.Hour)}, "at most"},
		{"an unknown group", EnrollToken{Hash: labHash[:63] + "0", Group: "attic", Expires: now.Add(time.Hour)}, "group attic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := inv.AddEnrollToken(ctx, tc.tok, now); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
