package state

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"tms/store"
)

func claimFixture(t *testing.T) (*Inventory, time.Time) {
	t.Helper()
	ctx := context.Background()
	inv := openInv(t)
	now := time.Now()
	if err := inv.Enroll(ctx, "aa:bb:cc:00:00:01", "pc-01"); err != nil {
		t.Fatal(err)
	}
	if err := inv.SetBootAction(ctx, "aa:bb:cc:00:00:01", BootAction{Action: "deploy", Task: "deploy/r/pc-01/win11/run1", Image: "win11", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return inv, now
}

const claimTask = "deploy/r/pc-01/win11/run1"

func TestClaimBindsTheTokenToItsAddress(t *testing.T) {
	forEachBackend(t, testClaimBindsTheTokenToItsAddress)
}

func testClaimBindsTheTokenToItsAddress(t *testing.T) {
	ctx := context.Background()
	inv, now := claimFixture(t)
	tok, c, err := inv.ClaimBoot(ctx, "AA:BB:CC:00:00:01", claimTask, "10.0.0.5", true, now)
	if err != nil || tok == "" || c.IP != "10.0.0.5" || !c.Network || !c.Claimed.Equal(now.UTC()) {
		t.Fatalf("claim: %q %+v %v", tok, c, err)
	}
	for _, tc := range []struct {
		name, task, token, ip string
		at                    time.Time
		ok, rival             bool
	}{
		{"the token from its address", claimTask, tok, "10.0.0.5", now, true, false},
		{"the token from another address", claimTask, tok, "10.0.0.6", now, false, true},
		{"a wrong token", claimTask, "wrong", "10.0.0.5", now, false, false},
		{"no token", claimTask, "", "10.0.0.5", now, false, false},
		{"another task", "capture/other", tok, "10.0.0.5", now, false, false},
		{"after the boot action expired", claimTask, tok, "10.0.0.5", now.Add(2 * time.Hour), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ok, err := inv.CheckClaim(ctx, "aa:bb:cc:00:00:01", tc.task, tc.token, tc.ip, tc.at)
			var re *RivalError
			if ok != tc.ok || errors.As(err, &re) != tc.rival || err != nil && !tc.rival {
				t.Fatalf("CheckClaim = %v, %v; want ok %v, rival %v", ok, err, tc.ok, tc.rival)
			}
			if tc.rival && (re.First != "10.0.0.5" || re.Second != tc.ip) {
				t.Fatalf("rival error names %s and %s", re.First, re.Second)
			}
		})
	}
}

func TestSecondClaimantIsARival(t *testing.T) { forEachBackend(t, testSecondClaimantIsARival) }

func testSecondClaimantIsARival(t *testing.T) {
	ctx := context.Background()
	inv, now := claimFixture(t)
	first, _, err := inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "10.0.0.5", true, now)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "10.0.0.9", true, now.Add(time.Second))
	var re *RivalError
	if !errors.As(err, &re) || re.First != "10.0.0.5" || re.Second != "10.0.0.9" || !strings.Contains(err.Error(), "10.0.0.5 and 10.0.0.9") {
		t.Fatalf("second claimant: %v", err)
	}
	// The first claim still stands for its owner.
	if _, ok, err := inv.CheckClaim(ctx, "aa:bb:cc:00:00:01", claimTask, first, "10.0.0.5", now); !ok || err != nil {
		t.Fatalf("first claim after a rival: %v, %v", ok, err)
	}
}

func TestReclaimRotatesTheToken(t *testing.T) { forEachBackend(t, testReclaimRotatesTheToken) }

func testReclaimRotatesTheToken(t *testing.T) {
	ctx := context.Background()
	inv, now := claimFixture(t)
	first, c1, _ := inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "10.0.0.5", true, now)
	second, c2, err := inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "10.0.0.5", true, now.Add(time.Minute))
	if err != nil || second == first {
		t.Fatalf("reclaim: %v (token rotated: %v)", err, second != first)
	}
	if !c2.Claimed.Equal(c1.Claimed) {
		t.Fatalf("a reclaim moved the claim time from %v to %v", c1.Claimed, c2.Claimed)
	}
	if _, ok, err := inv.CheckClaim(ctx, "aa:bb:cc:00:00:01", claimTask, second, "10.0.0.5", now); !ok || err != nil {
		t.Fatalf("new token: %v, %v", ok, err)
	}
	// The replaced token from the claiming address is that machine's earlier boot: refused.
	if _, ok, err := inv.CheckClaim(ctx, "aa:bb:cc:00:00:01", claimTask, first, "10.0.0.5", now); ok || err != nil {
		t.Fatalf("the replaced token from the claiming address: %v, %v; want refused", ok, err)
	}
	// From anywhere else it is a rival.
	var re *RivalError
	if _, _, err := inv.CheckClaim(ctx, "aa:bb:cc:00:00:01", claimTask, first, "10.0.0.8", now); !errors.As(err, &re) {
		t.Fatalf("the replaced token from another address: %v; want a rival", err)
	}
}

func TestClaimNeedsItsTask(t *testing.T) { forEachBackend(t, testClaimNeedsItsTask) }

func testClaimNeedsItsTask(t *testing.T) {
	ctx := context.Background()
	inv, now := claimFixture(t)
	for _, tc := range []struct {
		name, mac, task string
		at              time.Time
	}{
		{"another task", "aa:bb:cc:00:00:01", "deploy/other", now},
		{"an expired boot action", "aa:bb:cc:00:00:01", claimTask, now.Add(2 * time.Hour)},
		{"a terminal without a boot action", "aa:bb:cc:00:00:02", claimTask, now},
	} {
		if _, _, err := inv.ClaimBoot(ctx, tc.mac, tc.task, "10.0.0.5", true, tc.at); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v; want not found", tc.name, err)
		}
	}
	if _, _, err := inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "", true, now); err == nil {
		t.Error("a claim without an address was taken")
	}
}

func TestNewBootActionForgetsTheClaim(t *testing.T) {
	forEachBackend(t, testNewBootActionForgetsTheClaim)
}

func testNewBootActionForgetsTheClaim(t *testing.T) {
	ctx := context.Background()
	inv, now := claimFixture(t)
	tok, _, _ := inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "10.0.0.5", true, now)
	if err := inv.SetBootAction(ctx, "aa:bb:cc:00:00:01", BootAction{Action: "deploy", Task: claimTask, Image: "win11", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := inv.CheckClaim(ctx, "aa:bb:cc:00:00:01", claimTask, tok, "10.0.0.5", now); ok || err != nil {
		t.Fatalf("old token after a new boot action: %v, %v", ok, err)
	}
	if _, _, err := inv.ClaimBoot(ctx, "aa:bb:cc:00:00:01", claimTask, "10.0.0.7", true, now); err != nil {
		t.Fatalf("a new boot action can be claimed from a new address: %v", err)
	}
	if err := inv.RevokeBoot(ctx, "aa:bb:cc:00:00:01", claimTask); err != nil {
		t.Fatal(err)
	}
	if a, _ := inv.BootAction(ctx, "aa:bb:cc:00:00:01", now); a.Task != claimTask {
		t.Fatalf("revoking a boot dropped its action: %+v", a)
	}
}

func TestAgentKeys(t *testing.T) { forEachBackend(t, testAgentKeys) }

func testAgentKeys(t *testing.T) {
	ctx := context.Background()
	inv := openInv(t)
	inv.Enroll(ctx, "aa:bb:cc:00:00:01", "pc-01")
	inv.Seen(ctx, "aa:bb:cc:00:00:02", "10.0.0.2", time.Now())
	if _, err := inv.AgentKey(ctx, "aa:bb:cc:00:00:01"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("key before one was issued: %v", err)
	}
	k1, err := inv.IssueAgentKey(ctx, "aa:bb:cc:00:00:01")
	if err != nil || len(k1) != AgentKeySize {
		t.Fatalf("issue: %x, %v", k1, err)
	}
	if got, err := inv.AgentKey(ctx, "AA:BB:CC:00:00:01"); err != nil || string(got) != string(k1) {
		t.Fatalf("key: %x, %v", got, err)
	}
	k2, _ := inv.IssueAgentKey(ctx, "aa:bb:cc:00:00:01")
	if got, _ := inv.AgentKey(ctx, "aa:bb:cc:00:00:01"); string(got) != string(k2) || string(k1) == string(k2) {
		t.Fatal("a new key did not replace the old one")
	}
	if _, err := inv.IssueAgentKey(ctx, "aa:bb:cc:00:00:02"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a key for a terminal that is not enrolled: %v", err)
	}
}
