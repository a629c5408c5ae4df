package state

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSiblingSecretOneForTheRegion: servers opening the region's database at once (each its own
// connection; PostgreSQL with TMS_TEST_DATABASE=postgres) all end with the same secret, the
// first one made.
func TestSiblingSecretOneForTheRegion(t *testing.T) {
	ctx := context.Background()
	const servers = 4
	invs := openShared(t, servers)
	secrets := make([][]byte, servers)
	var wg sync.WaitGroup
	for i, inv := range invs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := inv.SiblingSecret(ctx)
			if err != nil {
				t.Error(err)
			}
			secrets[i] = s
		}()
	}
	wg.Wait()
	for i, s := range secrets {
		if len(s) != 32 || !bytes.Equal(s, secrets[0]) {
			t.Fatalf("server %d has secret %x, server 0 %x", i, s, secrets[0])
		}
	}
	// Asked again (a server restarting), the same.
	if s, err := invs[3].SiblingSecret(ctx); err != nil || !bytes.Equal(s, secrets[0]) {
		t.Fatalf("asked again: %x, %v", s, err)
	}
}

// TestUseNonceOncePerRegion: a key-signed request's nonce is taken once across the region's
// servers (each its own connection to the database), and is forgotten once it expired.
func TestUseNonceOncePerRegion(t *testing.T) {
	ctx := context.Background()
	invs := openShared(t, 2)
	a, b := invs[0], invs[1]
	now := time.Unix(1_800_000_000, 0)
	until := now.Add(10 * time.Minute)
	for _, tc := range []struct {
		name  string
		inv   *Inventory
		mac   string
		nonce string
		at    time.Time
		fresh bool
	}{
		{"first use", a, "52:54:00:00:00:01", "n1", now, true},
		{"the same at the sibling", b, "52:54:00:00:00:01", "n1", now, false},
		{"the same, MAC written otherwise", b, "52-54-00-00-00-01", "n1", now, false},
		{"another terminal's", b, "52:54:00:00:00:02", "n1", now, true},
		{"after it expired", b, "52:54:00:00:00:01", "n1", until.Add(time.Second), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := until
			if tc.at.After(until) {
				u = tc.at.Add(10 * time.Minute)
			}
			fresh, err := tc.inv.UseNonce(ctx, tc.mac, tc.nonce, u, tc.at)
			if err != nil || fresh != tc.fresh {
				t.Fatalf("UseNonce: %v, %v; want %v", fresh, err, tc.fresh)
			}
		})
	}
	if _, err := a.UseNonce(ctx, "52:54:00:00:00:01", strings.Repeat("x", 200), until, now); err == nil {
		t.Error("a nonce of 200 bytes was kept")
	}
}
