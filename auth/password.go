package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Passwords are stored as argon2id hashes with a per-user random salt, in the PHC string form
// "$argon2id$v=19$m=65536,t=2,p=1$<salt>$<hash>" so the parameters can grow later.

// MinPasswordLen and MaxPasswordLen bound passwords (the upper bound keeps hashing cheap to refuse).
const (
	MinPasswordLen = 10
	MaxPasswordLen = 256
)

const (
	argonTime    = 2
	argonMemory  = 64 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
)

// ErrPassword is a wrong password.
var ErrPassword = errors.New("wrong user name or password")

// CheckPasswordRules refuses a password too short or too long.
func CheckPasswordRules(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return fmt.Errorf("password too short: at least %d characters", MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("password too long: at most %d bytes", MaxPasswordLen)
	}
	return nil
}

// HashPassword returns pw's argon2id hash with a fresh salt.
func HashPassword(pw string) (string, error) {
	if err := CheckPasswordRules(pw); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	rand.Read(salt)
	h := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(h)), nil
}

// CheckPassword compares pw with hash in constant time; a mismatch is ErrPassword.
func CheckPassword(hash, pw string) error {
	if len(pw) > MaxPasswordLen {
		return ErrPassword
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return errors.New("stored password hash is not argon2id")
	}
	var m uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || m > 1<<20 || t == 0 || t > 16 || p == 0 {
		return errors.New("stored password hash has bad parameters")
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 64 {
		return errors.New("stored password hash is damaged")
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrPassword
	}
	return nil
}

// DummyCheck spends the time one CheckPassword takes, for a user that does not exist, so the
// answer's delay does not tell which names exist.
func DummyCheck(pw string) {
	argon2.IDKey([]byte(pw), make([]byte, saltLen), argonTime, argonMemory, argonThreads, argonKeyLen)
}

// NewPassword returns a random password (tms dev's first admin).
func NewPassword() string { return rand.Text() }
