package store_test

import (
	"context"
	"errors"
	"testing"

	"tms/internal/storetest"
	"tms/manifest"
	"tms/signing"
	"tms/store"
)

// TestSignatureObjects checks that a version's signature is stored beside it, read back as
// stored, refused when damaged, and removed with the version.
func TestSignatureObjects(t *testing.T) {
	ctx := context.Background()
	s, _ := storetest.Dir(t)
	res := storetest.Import(t, s, storetest.SampleDisk(t, 8<<20, 1), "lab")
	id := res.Version.ID
	if _, err := s.GetSignature(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unsigned version: %v, want ErrNotFound", err)
	}
	k, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sig := k.SignVersion(id)
	if err := s.PutSignature(ctx, id, signing.Signature{KeyID: "nothex"}); err == nil {
		t.Fatal("stored a malformed signature")
	}
	if err := s.PutSignature(ctx, id, sig); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSignature(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Public().VerifyVersion(id, got); err != nil {
		t.Fatal(err)
	}
	if err := s.Backend().Put(ctx, store.SignatureKey(id), []byte(`{"key_id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSignature(ctx, id); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("damaged signature: %v, want ErrCorrupt", err)
	}
	if _, err := s.Remove(ctx, manifest.Ref{Name: "lab", Version: id.String(), Explicit: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backend().Get(ctx, store.SignatureKey(id)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("signature after the version was removed: %v", err)
	}
}
