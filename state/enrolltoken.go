package state

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// An enrollment token lets the agent service of a terminal's installed OS get the terminal's
// agent key once, without an admin copying keys around: the admin makes a token for a region
// (or one group of it) valid for a while, puts it in the image or types it on the terminal, and
// each enrolled terminal's service trades it, once, for its own key. The region keeps only
// the token's hash.

// enrollTokenMigration keeps enrollment tokens: only their hashes, and which terminal used
// which (each MAC trades a token once).
var enrollTokenMigration = migration{version: 6, sql: `
CREATE TABLE enroll_tokens (
	hash TEXT PRIMARY KEY,
	grp TEXT NOT NULL DEFAULT '',
	rekey INTEGER NOT NULL DEFAULT 0,
	expires INTEGER NOT NULL,
	created INTEGER NOT NULL
);
CREATE TABLE enroll_uses (
	hash TEXT NOT NULL REFERENCES enroll_tokens(hash) ON DELETE CASCADE,
	mac TEXT NOT NULL,
	used INTEGER NOT NULL,
	PRIMARY KEY (hash, mac)
);
`}

// ErrTokenRefused marks every reason a token is not traded for a key; the message says which.
var ErrTokenRefused = errors.New("enrollment token refused")

// MaxEnrollTokenTTL bounds how long an enrollment token is valid.
const MaxEnrollTokenTTL = 7 * 24 * time.Hour

// NewEnrollToken makes a token and its hash (what AddEnrollToken stores).
func NewEnrollToken() (token, hash string) {
	b := make([]byte, 24)
	rand.Read(b)
	token = "tms-enroll-" + base64.RawURLEncoding.EncodeToString(b)
	return token, EnrollTokenHash(token)
}

// EnrollTokenHash is the stored form of a token.
func EnrollTokenHash(token string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return hex.EncodeToString(sum[:])
}

// EnrollToken is a token as the region records it.
type EnrollToken struct {
	Hash    string
	Group   string // empty: any enrolled terminal of the region
	Rekey   bool   // replaces a key a terminal already has
	Expires time.Time
}

// AddEnrollToken records a token by its hash. A group, if named, must exist.
func (inv *Inventory) AddEnrollToken(ctx context.Context, t EnrollToken, now time.Time) error {
	if len(t.Hash) != 64 {
		return fmt.Errorf("enrollment token hash %q is not 64 hex digits", t.Hash)
	}
	if _, err := hex.DecodeString(t.Hash); err != nil {
		return fmt.Errorf("enrollment token hash is not hex: %w", err)
	}
	if !t.Expires.After(now) || t.Expires.Sub(now) > MaxEnrollTokenTTL {
		return fmt.Errorf("an enrollment token lasts from now to at most %s; this one expires %s", MaxEnrollTokenTTL, t.Expires.UTC().Format(time.RFC3339))
	}
	if t.Group != "" {
		var n int
		if err := inv.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM groups WHERE name = ?`, t.Group).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return notFound("group " + t.Group)
		}
	}
	// Expired tokens go when a new one comes.
	if _, err := inv.db.ExecContext(ctx, `DELETE FROM enroll_tokens WHERE expires < ?`, now.UnixNano()); err != nil {
		return err
	}
	_, err := inv.db.ExecContext(ctx, `INSERT INTO enroll_tokens (hash, grp, rekey, expires, created) VALUES (?, ?, ?, ?, ?)`,
		t.Hash, t.Group, t.Rekey, t.Expires.UnixNano(), now.UnixNano())
	return err
}

// RedeemEnrollToken trades token for terminal mac's agent key: a new key, issued now. It is
// refused (ErrTokenRefused, saying why) for an unknown or expired token, a terminal not
// enrolled or not in the token's group, a terminal that already used this token, and one that
// already has a key unless the token re-keys.
func (inv *Inventory) RedeemEnrollToken(ctx context.Context, token, mac string, now time.Time) ([]byte, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	refuse := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: %s", ErrTokenRefused, fmt.Sprintf(format, args...))
	}
	hash := EnrollTokenHash(token)
	tx, err := inv.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if err := tx.lock(ctx, "terminal "+mac); err != nil {
		return nil, err
	}
	var group string
	var rekey bool
	var expires int64
	err = tx.QueryRowContext(ctx, `SELECT grp, rekey, expires FROM enroll_tokens WHERE hash = ?`, hash).Scan(&group, &rekey, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return refuse("the region knows no such token")
	}
	if err != nil {
		return nil, err
	}
	if now.UnixNano() > expires {
		return refuse("the token expired at %s", time.Unix(0, expires).UTC().Format(time.RFC3339))
	}
	var enrolled bool
	var key []byte
	err = tx.QueryRowContext(ctx, `SELECT enrolled, agent_key FROM terminals WHERE mac = ?`, mac).Scan(&enrolled, &key)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !enrolled {
		return refuse("terminal %s is not enrolled: 'tms terminal enroll' it first", mac)
	}
	if err != nil {
		return nil, err
	}
	if group != "" {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM group_members WHERE grp = ? AND mac = ?`,
			group, mac).Scan(&n); err != nil {
			return nil, err
		}
		if n == 0 {
			return refuse("terminal %s is not in group %s, which the token is for", mac, group)
		}
	}
	var used int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM enroll_uses WHERE hash = ? AND mac = ?`, hash, mac).Scan(&used); err != nil {
		return nil, err
	}
	if used > 0 {
		return refuse("terminal %s already used this token", mac)
	}
	if len(key) > 0 && !rekey {
		return refuse("terminal %s already has an agent key; make a token with --rekey to replace it", mac)
	}
	key = make([]byte, AgentKeySize)
	rand.Read(key)
	if _, err := tx.ExecContext(ctx, `UPDATE terminals SET agent_key = ? WHERE mac = ?`, key, mac); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO enroll_uses (hash, mac, used) VALUES (?, ?, ?)`, hash, mac, now.UnixNano()); err != nil {
		return nil, err
	}
	return key, tx.Commit()
}
