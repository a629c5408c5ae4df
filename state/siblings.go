package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// A region with several servers shares one secret among them, kept in the inventory they share:
// it keys the short-lived tokens one server presents when it asks a sibling for a chunk or a
// manifest (package sibling). Whichever server starts first creates it; the others read it.
// Terminals never see it.

// siblingSecretMigration keeps the region's internal secret (hex, 32 random bytes).
// It also keeps the nonces of key-signed requests until they can no longer be replayed, so a
// request signed with a terminal's agent key is taken once by the region, not once by each of
// its servers (UseNonce); and it gives boot claims a generation, bumped by every claim, so that servers claiming one
// terminal's boot at once cannot both win (ClaimBoot), and the id of the request that made the
// claim, so that one request reaching two servers is answered once.
var siblingSecretMigration = migration{version: 13, sql: `
CREATE TABLE region_secrets (
	name    TEXT PRIMARY KEY,
	secret  TEXT NOT NULL,
	created BIGINT NOT NULL
);
ALTER TABLE boot_actions ADD COLUMN claim_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE boot_actions ADD COLUMN claim_request TEXT NOT NULL DEFAULT '';
CREATE TABLE key_nonces (
	mac   TEXT NOT NULL,
	nonce TEXT NOT NULL,
	until BIGINT NOT NULL,
	PRIMARY KEY (mac, nonce)
);
`}

// siblingSecretName is the row of the secret siblings sign their requests with.
const siblingSecretName = "sibling"

// SiblingSecret returns the region's sibling secret, creating it if no server has yet. Two
// servers starting at once both try to create it; the database keeps the first and both read
// that one.
func (inv *Inventory) SiblingSecret(ctx context.Context) ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if _, err := inv.db.ExecContext(ctx, `INSERT INTO region_secrets (name, secret, created) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
		siblingSecretName, hex.EncodeToString(b), time.Now().UTC().Unix()); err != nil {
		return nil, fmt.Errorf("region secret: %w", err)
	}
	var s string
	if err := inv.db.QueryRowContext(ctx, `SELECT secret FROM region_secrets WHERE name = ?`, siblingSecretName).Scan(&s); err != nil {
		return nil, fmt.Errorf("region secret: %w", err)
	}
	secret, err := hex.DecodeString(s)
	if err != nil || len(secret) < 16 {
		return nil, fmt.Errorf("region secret: the stored secret is not 16 or more hex bytes")
	}
	return secret, nil
}

// maxNonceLen bounds a nonce kept (agentwire's are 16 bytes of hex or base64).
const maxNonceLen = 128

// UseNonce records that terminal mac's key-signed request with nonce was taken, until until
// (after which its signature is too old to be taken anyway), and reports false if a request
// with that nonce was taken already, by any of the region's servers: a replay.
func (inv *Inventory) UseNonce(ctx context.Context, mac, nonce string, until, now time.Time) (bool, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return false, err
	}
	if nonce == "" || len(nonce) > maxNonceLen {
		return false, fmt.Errorf("a nonce of %d bytes; want 1 to %d", len(nonce), maxNonceLen)
	}
	// The terminal's spent nonces go as they expire: a terminal signs a request every 30 s or so.
	if _, err := inv.db.ExecContext(ctx, `DELETE FROM key_nonces WHERE mac = ? AND until < ?`, mac, now.UnixNano()); err != nil {
		return false, err
	}
	res, err := inv.db.ExecContext(ctx, `INSERT INTO key_nonces (mac, nonce, until) VALUES (?, ?, ?) ON CONFLICT (mac, nonce) DO NOTHING`,
		mac, nonce, until.UnixNano())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
