package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// IDLen is the length in bytes of every chunk id and version id.
const IDLen = 32

// ID identifies a chunk (hash of its uncompressed bytes) or a version (hash of its canonical
// manifest). The zero ID stands for an all-zero chunk, which is never stored.
type ID [IDLen]byte

// IsZero reports whether id is the zero ID (an all-zero chunk in a chunk list).
func (id ID) IsZero() bool { return id == ID{} }

// String returns the id as 64 lowercase hex digits, or "" for the zero ID.
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return hex.EncodeToString(id[:])
}

// Short returns the first 12 hex digits, the form people read in listings.
func (id ID) Short() string {
	s := id.String()
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// ParseID parses 64 lowercase hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDLen {
		return id, fmt.Errorf("id %q: want %d hex digits, got %d", clip(s), 2*IDLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return id, fmt.Errorf("id %q: %q is not a lowercase hex digit", clip(s), c)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("id %q: %w", clip(s), err)
	}
	if id.IsZero() {
		return id, fmt.Errorf("id %q: the all-zero id is reserved", clip(s))
	}
	return id, nil
}

// MarshalText encodes the id as hex ("" for the zero ID).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText accepts what MarshalText writes.
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = ID{}
		return nil
	}
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Hash names the cryptographic hash that makes chunk and version ids.
type Hash string

const (
	// BLAKE3 is the default: see docs/format.md for the measurement that chose it.
	BLAKE3 Hash = "blake3"
	SHA256 Hash = "sha256"
)

// DefaultHash is the hash new images use.
const DefaultHash = BLAKE3

// Valid reports whether h is a hash tms knows.
func (h Hash) Valid() bool { return h == BLAKE3 || h == SHA256 }

// Sum hashes data. It panics on an unknown hash: callers validate first.
func (h Hash) Sum(data []byte) ID {
	switch h {
	case BLAKE3:
		return ID(blake3.Sum256(data))
	case SHA256:
		return ID(sha256.Sum256(data))
	}
	panic("manifest: unknown hash " + string(h))
}

// clip shortens untrusted input before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
