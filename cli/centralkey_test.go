package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tms/auth"
	"tms/internal/storetest"
	"tms/signing"
	"tms/state"
)

// TestCentralInitAndPubkey checks that tms central init creates central's key once (0600),
// prints its public key as a file regions can read, and never replaces it; tms central pubkey
// prints the same key, and the key file can come from the configuration.
func TestCentralInitAndPubkey(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "central.key")
	run := newRunner(map[string]string{"TMS_CENTRAL_SIGNING_KEY_FILE": keyFile})
	out := must(t, run, "central", "init")
	if !strings.Contains(out, "created in "+keyFile) {
		t.Fatalf("init output: %q", out)
	}
	pubFile := filepath.Join(dir, "central.pub")
	if err := os.WriteFile(pubFile, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := signing.LoadPublicKey(pubFile)
	if err != nil {
		t.Fatalf("init output is not a public key file: %v\n%s", err, out)
	}
	if !strings.Contains(out, "key id "+pub.ID()) {
		t.Fatalf("init output lacks the key id %s: %q", pub.ID(), out)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	before, _ := os.ReadFile(keyFile)

	again := must(t, run, "central", "init", "--key", keyFile)
	if strings.Contains(again, "created") || !strings.HasPrefix(again, pub.String()+"\n") {
		t.Fatalf("second init: %q", again)
	}
	if after, _ := os.ReadFile(keyFile); string(after) != string(before) {
		t.Fatal("init replaced an existing key")
	}
	var j struct {
		PublicKey string `json:"public_key"`
		KeyID     string `json:"key_id"`
		Created   bool   `json:"created"`
	}
	if err := json.Unmarshal([]byte(must(t, run, "central", "pubkey", "--json")), &j); err != nil {
		t.Fatal(err)
	}
	if j.PublicKey != pub.String() || j.KeyID != pub.ID() || j.Created {
		t.Fatalf("pubkey --json: %+v", j)
	}

	code, _, errs := newRunner(nil)("central", "pubkey")
	if code != 2 || !strings.Contains(errs, "--key FILE") {
		t.Fatalf("pubkey without a key file: exit %d, %s", code, errs)
	}
	code, _, errs = newRunner(nil)("central", "pubkey", "--key", filepath.Join(dir, "none.key"))
	if code != 1 || !strings.Contains(errs, "tms central init") {
		t.Fatalf("pubkey of a missing key: exit %d, %s", code, errs)
	}
}

// TestImageShowSignature checks that tms image show says who signed a version, or that
// nobody did.
func TestImageShowSignature(t *testing.T) {
	s, dir := storetest.Dir(t)
	v := storetest.Import(t, s, storetest.SampleDisk(t, 4<<20, 1), "lab").Version
	run := newRunner(nil)
	if text := must(t, run, "image", "show", "--store", dir, "lab"); !strings.Contains(text, "NOT SIGNED") {
		t.Fatalf("unsigned version:\n%s", text)
	}
	var d imageDetail
	if err := json.Unmarshal([]byte(must(t, run, "image", "show", "--store", dir, "lab", "--json")), &d); err != nil || d.Signer != "" || d.Signature != nil {
		t.Fatalf("unsigned version: %+v %v", d, err)
	}
	k, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sig := k.SignVersion(v.ID)
	if err := s.PutSignature(context.Background(), v.ID, sig); err != nil {
		t.Fatal(err)
	}
	if text := must(t, run, "image", "show", "--store", dir, "lab"); !strings.Contains(text, "signed by "+k.Public().ID()) {
		t.Fatalf("signed version:\n%s", text)
	}
	if err := json.Unmarshal([]byte(must(t, run, "image", "show", "--store", dir, "lab", "--json")), &d); err != nil ||
		d.Signer != k.Public().ID() || string(d.Signature) != string(sig.Signature) {
		t.Fatalf("signed version: %+v %v", d, err)
	}
}

// TestCentralInitFirstAdmin checks that tms central init --admin makes the first admin of an
// empty catalog, whose password logs in, once: a catalog with users is left alone.
func TestCentralInitFirstAdmin(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"TMS_CENTRAL_SIGNING_KEY_FILE": filepath.Join(dir, "central.key"),
		"TMS_CENTRAL_DATA_DIR": filepath.Join(dir, "central")}
	run := newRunner(env)
	out := must(t, run, "central", "init", "--admin", "root")
	i := strings.Index(out, "first admin: root, password: ")
	if i < 0 {
		t.Fatalf("no first admin in: %q", out)
	}
	password := strings.TrimSpace(out[i+len("first admin: root, password: "):])
	if len(password) < 10 {
		t.Fatalf("password %q", password)
	}
	cat, err := state.OpenCatalog(context.Background(), filepath.Join(dir, "central", "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := cat.User(context.Background(), "root")
	cat.Close()
	if err != nil || u.Role != "admin" || auth.CheckPassword(u.PasswordHash, password) != nil {
		t.Fatalf("first admin %+v: %v", u, err)
	}
	again := must(t, run, "central", "init", "--admin", "other")
	if strings.Contains(again, "first admin:") || !strings.Contains(again, "has 1 users already") {
		t.Fatalf("a second init made another admin: %q", again)
	}
}
