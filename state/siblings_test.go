package state

import (
	"bytes"
	"context"
	"path/filepath"
	"sync"
	"testing"
)

// TestSiblingSecretOneForTheRegion: servers opening the region's database at once (each its own
// connection) all end with the same secret, the first one made, and keep it across reopening.
func TestSiblingSecretOneForTheRegion(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "region.db")
	const servers = 4
	invs := make([]*Inventory, servers)
	for i := range invs {
		inv, err := OpenInventory(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer inv.Close()
		invs[i] = inv
	}
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
	invs[0].Close()
	again, err := OpenInventory(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if s, err := again.SiblingSecret(ctx); err != nil || !bytes.Equal(s, secrets[0]) {
		t.Fatalf("after reopening: %x, %v", s, err)
	}
}
