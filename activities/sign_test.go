package activities_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tms/activities"
	"tms/internal/pgtest"
	"tms/internal/storetest"
	"tms/signing"
	"tms/state"
	"tms/store"
)

// TestDeployNeedsCentralSignature checks that a region prepares a deploy only of a version
// central signed, and that StoreSignature keeps only signatures that verify.
func TestDeployNeedsCentralSignature(t *testing.T) {
	ctx := context.Background()
	st, _ := storetest.Dir(t)
	v, _ := imported(t, st, 4*mib)
	id := v.Version.ID
	inv, err := state.OpenInventory(ctx, pgtest.StateOr(t, filepath.Join(t.TempDir(), "region.db")))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	rogue, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	good := centralKey.SignVersion(id)
	flipped := signing.Signature{KeyID: good.KeyID, Signature: append([]byte(nil), good.Signature...)}
	flipped.Signature[5] ^= 1
	var s testsuite.WorkflowTestSuite
	var r *activities.Region
	for i, tt := range []struct {
		name string
		sig  *signing.Signature // stored in the region's store as is; nil: none
		want string             // error type; "" for success
	}{
		{name: "unsigned version is refused", want: "Unsigned"},
		{name: "version signed by another key is refused", sig: ptr(rogue.SignVersion(id)), want: "BadSignature"},
		{name: "signature with one flipped byte is refused", sig: &flipped, want: "BadSignature"},
		{name: "version signed by central is prepared", sig: &good},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mac := fmt.Sprintf("52:54:00:00:00:%02x", i+1)
			if err := inv.Enroll(ctx, mac, fmt.Sprintf("pc%d", i+1)); err != nil {
				t.Fatal(err)
			}
			st.Backend().Delete(ctx, store.SignatureKey(id))
			if tt.sig != nil {
				if err := st.PutSignature(ctx, id, *tt.sig); err != nil {
					t.Fatal(err)
				}
			}
			env := s.NewTestActivityEnvironment()
			env.RegisterActivity(&activities.Region{ID: "region-a", Store: st, Inventory: inv, CentralKey: centralKey.Public()})
			_, err := env.ExecuteActivity(r.PrepareTask, activities.TaskInput{Task: "deploy/" + mac, TerminalRef: mac, Kind: "deploy",
				Version: id.String(), Expires: time.Now().Add(time.Hour)})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ae *temporal.ApplicationError
			if !errors.As(err, &ae) || ae.Type() != tt.want || !ae.NonRetryable() {
				t.Fatalf("got %v, want a non-retryable %s", err, tt.want)
			}
			if a, err := inv.BootAction(ctx, mac, time.Now()); err == nil && a.Action == "deploy" {
				t.Fatal("the terminal was set to deploy a refused version")
			}
		})
	}

	st.Backend().Delete(ctx, store.SignatureKey(id))
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(&activities.Region{ID: "region-a", Store: st, CentralKey: centralKey.Public()})
	if _, err := env.ExecuteActivity(r.StoreSignature, activities.StoreSignatureInput{Version: id.String(), Signature: flipped}); err == nil {
		t.Fatal("StoreSignature kept a signature that does not verify")
	}
	if _, err := st.GetSignature(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after a refused StoreSignature: %v", err)
	}
	if _, err := env.ExecuteActivity(r.StoreSignature, activities.StoreSignatureInput{Version: id.String(), Signature: good}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSignature(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }
