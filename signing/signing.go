// Package signing holds central's ed25519 key and what it signs: image versions, so that the
// bytes a terminal writes trace back to central whatever the network in between, and transfer
// grants, so that only central can let one region read another region's store.
//
// Central keeps the private key (a PEM PKCS#8 file, mode 0600); regions and agents get the public
// key in a one-line text form, "tms-ed25519:<base64>", and name it by its key id, the first 8
// bytes of the SHA-256 of the public key in hex.
//
//	k, err := signing.CreateKeyFile("/etc/tms/central.key") // or LoadKeyFile
//	sig := k.SignVersion(id)                                  // central, when it registers id
//	err = pub.VerifyManifest(id, manifestBytes, sig)          // region or agent, before use
//
// Every signed message starts with its own domain prefix ("tms version v1\n" for a version,
// "tmsg2." for a grant), so a signature made for one kind of message never verifies as another.
package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"tms/internal/atomicfile"
	"tms/manifest"
)

// PublicKeyPrefix starts the text form of a public key.
const PublicKeyPrefix = "tms-ed25519:"

// KeyIDLen is the length of a key id in hex digits.
const KeyIDLen = 16

// ErrSignature marks every reason a signature is refused: none, another key's, or one that does
// not match the message.
var ErrSignature = errors.New("signature refused")

// PublicKey is central's public key, as regions and agents hold it.
type PublicKey struct{ k ed25519.PublicKey }

// IsZero reports whether the key is unset.
func (p PublicKey) IsZero() bool { return len(p.k) == 0 }

// ID is the key id: the first 8 bytes of the SHA-256 of the public key, in hex.
func (p PublicKey) ID() string {
	if p.IsZero() {
		return ""
	}
	h := sha256.Sum256(p.k)
	return hex.EncodeToString(h[:KeyIDLen/2])
}

// String is the key's text form, "tms-ed25519:<base64 of the 32 key bytes>".
func (p PublicKey) String() string {
	if p.IsZero() {
		return ""
	}
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(p.k)
}

// Equal reports whether p and q are the same key.
func (p PublicKey) Equal(q PublicKey) bool { return p.k.Equal(q.k) }

// ParsePublicKey reads a key's text form; surrounding white space is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return PublicKey{}, fmt.Errorf("public key %q does not start with %q (print it with tms central pubkey)", clip(s), PublicKeyPrefix)
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return PublicKey{}, fmt.Errorf("public key %q: bad base64: %w", clip(s), err)
	}
	if len(b) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("public key %q: %d bytes, want %d", clip(s), len(b), ed25519.PublicKeySize)
	}
	return PublicKey{k: ed25519.PublicKey(b)}, nil
}

// maxPublicKeyFile bounds a public key file: one line and a comment or two.
const maxPublicKeyFile = 4096

// LoadPublicKey reads a public key given either as its text form or as the name of a file
// holding it.
func LoadPublicKey(s string) (PublicKey, error) {
	if strings.HasPrefix(strings.TrimSpace(s), PublicKeyPrefix) {
		return ParsePublicKey(s)
	}
	f, err := os.Open(s)
	if err != nil {
		return PublicKey{}, fmt.Errorf("central public key: %q is neither %s… nor a readable file: %w", clip(s), PublicKeyPrefix, err)
	}
	defer f.Close()
	b := make([]byte, maxPublicKeyFile+1)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return PublicKey{}, fmt.Errorf("central public key file %s: %w", s, err)
	}
	if n > maxPublicKeyFile {
		return PublicKey{}, fmt.Errorf("central public key file %s is longer than %d bytes", s, maxPublicKeyFile)
	}
	for _, line := range strings.Split(string(b[:n]), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			k, err := ParsePublicKey(line)
			if err != nil {
				return PublicKey{}, fmt.Errorf("central public key file %s: %w", s, err)
			}
			return k, nil
		}
	}
	return PublicKey{}, fmt.Errorf("central public key file %s holds no key", s)
}

// PrivateKey is central's signing key.
type PrivateKey struct {
	k   ed25519.PrivateKey
	pub PublicKey
}

// Public returns the key's public half.
func (k *PrivateKey) Public() PublicKey { return k.pub }

// GenerateKey makes a new random key.
func GenerateKey() (*PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &PrivateKey{k: priv, pub: PublicKey{k: pub}}, nil
}

// maxKeyFile bounds a private key file.
const maxKeyFile = 8192

// LoadKeyFile reads a private key file written by CreateKeyFile (PEM, PKCS#8, ed25519). A file
// that others than its owner may read is refused: the key is what every region trusts.
func LoadKeyFile(path string) (*PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("central signing key: %w (create it with tms central init)", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("central signing key %s has mode %v: others may read it; chmod 600 it", path, st.Mode().Perm())
	}
	if st.Size() > maxKeyFile {
		return nil, fmt.Errorf("central signing key %s: %d bytes is too long for a key", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("central signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("central signing key %s: not a PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("central signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("central signing key %s: a %T, want ed25519", path, k)
	}
	return &PrivateKey{k: priv, pub: PublicKey{k: priv.Public().(ed25519.PublicKey)}}, nil
}

// CreateKeyFile makes a new key and writes it to path (mode 0600, atomically). It refuses to
// replace a file that is there: a new key would orphan every signature made with the old one.
// The error then wraps fs.ErrExist.
func CreateKeyFile(path string) (*PrivateKey, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("central signing key %s: %w; tms central pubkey prints its public key", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.k)
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := atomicfile.Write(path, strings.NewReader(string(b)), 0o600); err != nil {
		return nil, fmt.Errorf("central signing key %s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateKeyFile loads the key at path, creating it first if there is none (tms dev).
func LoadOrCreateKeyFile(path string) (*PrivateKey, error) {
	k, err := LoadKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return CreateKeyFile(path)
	}
	return k, err
}

// versionDomain starts every version signature's message.
const versionDomain = "tms version v1\n"

func versionMessage(id manifest.ID) []byte { return []byte(versionDomain + id.String()) }

// Signature is a version's signature as it travels with the manifest: who signed, and the
// ed25519 signature of "tms version v1\n" + the version id in hex.
type Signature struct {
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// IsZero reports whether there is no signature.
func (s Signature) IsZero() bool { return s.KeyID == "" && len(s.Signature) == 0 }

// MaxSignatureJSON bounds an encoded Signature read from a store or a peer.
const MaxSignatureJSON = 512

// Check makes sure the signature has the right form: a key id of 16 hex digits and 64 bytes.
func (s Signature) Check() error {
	if len(s.KeyID) != KeyIDLen || strings.Trim(s.KeyID, "0123456789abcdef") != "" {
		return fmt.Errorf("signature's key id %q: want %d lowercase hex digits", clip(s.KeyID), KeyIDLen)
	}
	if len(s.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("signature has %d bytes, want %d", len(s.Signature), ed25519.SignatureSize)
	}
	return nil
}

// Encode returns the signature's JSON.
func (s Signature) Encode() []byte {
	b, _ := json.Marshal(s)
	return b
}

// DecodeSignature reads what Encode writes, checking its size and form.
func DecodeSignature(b []byte) (Signature, error) {
	var s Signature
	if len(b) > MaxSignatureJSON {
		return s, fmt.Errorf("signature object of %d bytes, more than %d", len(b), MaxSignatureJSON)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return Signature{}, fmt.Errorf("signature object: %w", err)
	}
	if err := s.Check(); err != nil {
		return Signature{}, err
	}
	return s, nil
}

// SignVersion signs version id.
func (k *PrivateKey) SignVersion(id manifest.ID) Signature {
	return Signature{KeyID: k.pub.ID(), Signature: ed25519.Sign(k.k, versionMessage(id))}
}

// VerifyVersion checks that sig is p's signature of version id. The caller must have computed id
// from the manifest bytes it holds (VerifyManifest does both).
func (p PublicKey) VerifyVersion(id manifest.ID, sig Signature) error {
	switch {
	case p.IsZero():
		return fmt.Errorf("%w: no central public key to check version %s with", ErrSignature, id.Short())
	case id.IsZero():
		return fmt.Errorf("%w: no version id", ErrSignature)
	case sig.IsZero():
		return fmt.Errorf("%w: version %s is not signed", ErrSignature, id.Short())
	}
	if err := sig.Check(); err != nil {
		return fmt.Errorf("%w: version %s: %w", ErrSignature, id.Short(), err)
	}
	if sig.KeyID != p.ID() {
		return fmt.Errorf("%w: version %s is signed by key %s, not by central's key %s", ErrSignature, id.Short(), sig.KeyID, p.ID())
	}
	if !ed25519.Verify(p.k, versionMessage(id), sig.Signature) {
		return fmt.Errorf("%w: the signature of version %s does not match it (key %s)", ErrSignature, id.Short(), sig.KeyID)
	}
	return nil
}

// VerifyManifest checks that encoded is a manifest whose version id is id, and that sig is p's
// signature of id. Since the id is the hash of the manifest, and the manifest names every
// chunk by the hash of its bytes, this covers every byte the version writes.
func (p PublicKey) VerifyManifest(id manifest.ID, encoded []byte, sig Signature) error {
	m, err := manifest.Decode(encoded)
	if err != nil {
		return fmt.Errorf("%w: manifest of %s: %w", ErrSignature, id.Short(), err)
	}
	if got := manifest.VersionID(m.Hash, encoded); got != id {
		return fmt.Errorf("%w: the manifest given for %s hashes to %s", ErrSignature, id.Short(), got.Short())
	}
	return p.VerifyVersion(id, sig)
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
