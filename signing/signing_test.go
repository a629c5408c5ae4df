package signing

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tms/manifest"
)

func newKey(t testing.TB) *PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testManifest returns an encoded manifest and its version id.
func testManifest(t testing.TB) ([]byte, manifest.ID) {
	t.Helper()
	m := &manifest.Manifest{Format: manifest.Format, Hash: manifest.BLAKE3, DiskSize: 1 << 20, ChunkSize: 1 << 20,
		Meta:   manifest.Meta{Name: "lab", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		Chunks: []manifest.ID{manifest.BLAKE3.Sum([]byte("chunk"))}}
	b, err := manifest.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b, manifest.VersionID(m.Hash, b)
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

func TestVersionSignature(t *testing.T) {
	k := newKey(t)
	enc, id := testManifest(t)
	sig := k.SignVersion(id)
	if sig.KeyID != k.Public().ID() {
		t.Fatalf("key id %q, want %q", sig.KeyID, k.Public().ID())
	}
	other := newKey(t)
	badID := id
	badID[7] ^= 1
	badKeyBytes := flip(k.Public().k, 3)
	// A domain-less signature of the same id, as a careless signer of something else would make.
	bare := Signature{KeyID: sig.KeyID, Signature: ed25519.Sign(k.k, []byte(id.String()))}
	// The version's message signed as if it were a grant body: no domain confusion either way.
	grantish := Signature{KeyID: sig.KeyID, Signature: ed25519.Sign(k.k, []byte(grantPrefix+"."+id.String()))}
	tests := []struct {
		name string
		key  PublicKey
		id   manifest.ID
		enc  []byte
		sig  Signature
		ok   bool
	}{
		{name: "good signature verifies", key: k.Public(), id: id, enc: enc, sig: sig, ok: true},
		{name: "one flipped byte in the id is refused", key: k.Public(), id: badID, enc: enc, sig: sig},
		{name: "one flipped byte in the manifest is refused", key: k.Public(), id: id, enc: flip(enc, len(enc)/2), sig: sig},
		{name: "one flipped byte in the signature is refused", key: k.Public(), id: id, enc: enc, sig: Signature{KeyID: sig.KeyID, Signature: flip(sig.Signature, 10)}},
		{name: "one flipped byte in the key is refused", key: PublicKey{k: badKeyBytes}, id: id, enc: enc, sig: sig},
		{name: "another key's signature is refused", key: other.Public(), id: id, enc: enc, sig: sig},
		{name: "another key with a forged key id is refused", key: k.Public(), id: id, enc: enc, sig: Signature{KeyID: sig.KeyID, Signature: other.SignVersion(id).Signature}},
		{name: "a signature without the version domain is refused", key: k.Public(), id: id, enc: enc, sig: bare},
		{name: "a signature in the grant domain is refused", key: k.Public(), id: id, enc: enc, sig: grantish},
		{name: "no signature is refused", key: k.Public(), id: id, enc: enc},
		{name: "no key refuses everything", id: id, enc: enc, sig: sig},
		{name: "a short signature is refused", key: k.Public(), id: id, enc: enc, sig: Signature{KeyID: sig.KeyID, Signature: sig.Signature[:63]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.key.VerifyManifest(tt.id, tt.enc, tt.sig)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatal("accepted")
				}
				if !errors.Is(err, ErrSignature) {
					t.Fatalf("error %v is not ErrSignature", err)
				}
			}
		})
	}
}

func TestSignatureEncoding(t *testing.T) {
	k := newKey(t)
	_, id := testManifest(t)
	sig := k.SignVersion(id)
	got, err := DecodeSignature(sig.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Public().VerifyVersion(id, got); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{``, `{}`, `{"key_id":"zz","signature":""}`, `[1]`, `{"key_id":"` + sig.KeyID + `","signature":"AAAA"}`, strings.Repeat(" ", MaxSignatureJSON+1)} {
		if _, err := DecodeSignature([]byte(bad)); err == nil {
			t.Errorf("DecodeSignature(%q) accepted", bad)
		}
	}
}

func TestPublicKeyText(t *testing.T) {
	k := newKey(t)
	s := k.Public().String()
	if !strings.HasPrefix(s, PublicKeyPrefix) {
		t.Fatalf("text form %q", s)
	}
	p, err := ParsePublicKey(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Equal(k.Public()) || p.ID() != k.Public().ID() || len(p.ID()) != KeyIDLen {
		t.Fatalf("round trip gave %s (%s)", p, p.ID())
	}
	file := filepath.Join(t.TempDir(), "central.pub")
	if err := os.WriteFile(file, []byte("# central of the north site\n"+s+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := LoadPublicKey(file); err != nil || !p.Equal(k.Public()) {
		t.Fatalf("LoadPublicKey(file) = %s, %v", p, err)
	}
	if p, err := LoadPublicKey(s); err != nil || !p.Equal(k.Public()) {
		t.Fatalf("LoadPublicKey(text) = %s, %v", p, err)
	}
	for _, bad := range []string{"", "ed25519:AAAA", PublicKeyPrefix + "!!", PublicKeyPrefix + "AAAA", s[:len(s)-4]} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
	if _, err := LoadPublicKey(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("LoadPublicKey of a missing file accepted")
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "central.key")
	k, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	if _, err := CreateKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateKeyFile: %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("CreateKeyFile replaced an existing key")
	}
	l, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Public().Equal(k.Public()) {
		t.Fatal("loaded key differs from the created one")
	}
	_, id := testManifest(t)
	if err := k.Public().VerifyVersion(id, l.SignVersion(id)); err != nil {
		t.Fatal(err)
	}
	if l2, err := LoadOrCreateKeyFile(path); err != nil || !l2.Public().Equal(k.Public()) {
		t.Fatalf("LoadOrCreateKeyFile of an existing key: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadKeyFile of a readable key: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.key")
	os.WriteFile(junk, []byte("not a key"), 0o600)
	if _, err := LoadKeyFile(junk); err == nil {
		t.Fatal("LoadKeyFile of junk accepted")
	}
}

func TestGrants(t *testing.T) {
	central := newKey(t)
	_, id := testManifest(t)
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	good := Grant{Version: id, Audience: "region-b", Server: "region-a", Expires: now.Add(15 * time.Minute)}
	// A region that wants another region's images has only its own key, not central's.
	rogue := newKey(t)
	tok := central.MintGrant(good)
	parts := strings.Split(tok, ".")
	sig := []byte(parts[2])
	sig[3] ^= 2
	tests := []struct {
		name   string
		token  string
		server string
		now    time.Time
		ok     bool
	}{
		{name: "grant is good at the serving region", token: tok, server: "region-a", now: now, ok: true},
		{name: "grant for region-a is refused by region-b", token: tok, server: "region-b", now: now},
		{name: "expired grant is refused", token: tok, server: "region-a", now: now.Add(15 * time.Minute)},
		{name: "grant minted without central's key is refused", token: rogue.MintGrant(good), server: "region-a", now: now},
		{name: "flipped signature byte is refused", token: parts[0] + "." + parts[1] + "." + string(sig), server: "region-a", now: now},
		{name: "claims swapped from another grant are refused", token: parts[0] + "." + strings.Split(central.MintGrant(Grant{Version: id, Audience: "x", Server: "region-b", Expires: good.Expires}), ".")[1] + "." + parts[2], server: "region-b", now: now},
		{name: "old HMAC grant form is refused", token: "tmsg1." + parts[1] + "." + parts[2], server: "region-a", now: now},
		{name: "grant without a serving region is refused", token: central.MintGrant(Grant{Version: id, Audience: "region-b", Expires: good.Expires}), server: "", now: now},
		{name: "overlong token is refused", token: tok + strings.Repeat("A", MaxGrantLen), server: "region-a", now: now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := central.Public().VerifyGrant(tt.token, tt.server, tt.now)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if g.Version != id || g.Audience != "region-b" || g.Server != "region-a" {
					t.Fatalf("grant %+v", g)
				}
				return
			}
			if !errors.Is(err, ErrGrant) {
				t.Fatalf("got %v, want ErrGrant", err)
			}
		})
	}
	// A version signature is not a grant, whatever its bytes are framed as.
	vs := central.SignVersion(id)
	forged := grantPrefix + "." + parts[1] + "." + encodeRaw(vs.Signature)
	if _, err := central.Public().VerifyGrant(forged, "region-a", now); err == nil {
		t.Fatal("a version signature passed as a grant")
	}
}

func FuzzVerifyGrant(f *testing.F) {
	k := newKey(f)
	_, id := testManifest(f)
	f.Add(k.MintGrant(Grant{Version: id, Server: "region-a", Expires: time.Now().Add(time.Hour)}))
	f.Add("tmsg2..")
	f.Add("tmsg2.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		g, err := k.Public().VerifyGrant(tok, "region-a", time.Now())
		if err == nil && (g.Version.IsZero() || g.Server != "region-a") {
			t.Fatalf("accepted a grant for no version or another server: %q", tok)
		}
	})
}

func FuzzDecodeSignature(f *testing.F) {
	k := newKey(f)
	_, id := testManifest(f)
	f.Add(k.SignVersion(id).Encode())
	f.Add([]byte(`{"key_id":"0011223344556677","signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSignature(b)
		if err == nil && s.Check() != nil {
			t.Fatalf("accepted a malformed signature: %q", b)
		}
		if err == nil && k.Public().VerifyVersion(id, s) == nil && string(s.Signature) != string(k.SignVersion(id).Signature) {
			t.Fatalf("a different signature verified: %q", b)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add(newKey(f).Public().String())
	f.Add(PublicKeyPrefix)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublicKey(s)
		if err == nil && len(p.k) != ed25519.PublicKeySize {
			t.Fatalf("accepted a key of %d bytes", len(p.k))
		}
	})
}

func encodeRaw(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
