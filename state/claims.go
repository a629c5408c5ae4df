package state

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A terminal's boot into a task is claimed by the first machine that asks for it: the address
// it asked from is recorded with the token minted for it, and from then on only that address
// may use the token. A second machine that asks for the same boot (a MAC is easy to forge), or
// that presents the token from another address, or presents a token a later boot replaced, is a
// rival: the task fails, naming both addresses, and nothing it did is published or marked done.
// This is Ironic's rule for its agent token (issued once; a second claimant is refused and
// reported), kept per boot so a terminal that reboots mid-task claims again from its address.

// RivalError says that two machines claimed one terminal's boot into a task.
type RivalError struct {
	MAC    string
	Task   string
	First  string // the address that claimed the boot first
	Second string // the address of the rival
	Why    string // how the rival showed itself
}

func (e *RivalError) Error() string {
	return fmt.Sprintf("terminal %s's boot into task %s was claimed by two machines, %s and %s (%s): another PC on the segment uses its MAC address",
		e.MAC, e.Task, e.First, e.Second, e.Why)
}

// Claim is a terminal's claimed boot into a task.
type Claim struct {
	MAC     string
	Task    string
	IP      string    // where the claim came from
	Claimed time.Time // when the boot was first claimed
	// Network is true when the claim came through the network boot (an iPXE script request),
	// false when the terminal's own agent key signed it.
	Network bool
}

// ErrClaimTaken says a boot request was already answered: the same request (the same signed
// request, the same boot token) came again, or reached another of the region's servers, which
// took it first.
var ErrClaimTaken = errors.New("this boot request was already answered, by this or another of the region's servers: a boot token is exchanged once, a signed request taken once")

// ClaimBoot claims mac's boot into task from address ip and returns a fresh token for it. The
// first claim binds the boot to ip; a later claim from the same address (the terminal booted
// again) rotates the token, and the one it replaces can no longer be used. A claim from any other
// address is a *RivalError. network records how the claim was made.
func (inv *Inventory) ClaimBoot(ctx context.Context, mac, task, ip string, network bool, now time.Time) (string, Claim, error) {
	return inv.ClaimBootRequest(ctx, mac, task, ip, network, "", now)
}

// ClaimBootRequest is ClaimBoot for the request named request (unique to it: a signed
// request's nonce, a boot token's hash; empty: none). Several servers share the database: the
// claim is a compare-and-set on the boot's claim generation, so of two claims made at once
// exactly one wins; the other looks again and, if it was the same request, gets ErrClaimTaken
// (and a rival's address, a *RivalError).
func (inv *Inventory) ClaimBootRequest(ctx context.Context, mac, task, ip string, network bool, request string, now time.Time) (string, Claim, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return "", Claim{}, err
	}
	if ip == "" {
		return "", Claim{}, errors.New("a boot claim needs the address it came from")
	}
	for try := 0; ; try++ {
		b, err := readBootClaim(ctx, inv.db, mac, "")
		if errors.Is(err, sql.ErrNoRows) || err == nil && !b.stands(task, now) {
			return "", Claim{}, notFound("boot of terminal " + mac + " into task " + task)
		}
		if err != nil {
			return "", Claim{}, err
		}
		if request != "" && b.request == request {
			return "", Claim{}, ErrClaimTaken
		}
		claimIP := b.claimIP
		if claimIP != "" && claimIP != ip {
			return "", Claim{}, &RivalError{MAC: mac, Task: task, First: claimIP, Second: ip, Why: "a second boot request"}
		}
		c := b.claim(mac, task)
		c.IP, c.Network = ip, c.Network || network
		if claimIP == "" {
			c.Claimed = now.UTC()
		}
		token := NewToken()
		h := sha256.Sum256([]byte(token))
		res, err := inv.db.ExecContext(ctx, `UPDATE boot_actions SET prev_token_hash = token_hash, token_hash = ?, claim_ip = ?, claimed = ?, claim_network = ?,
			claim_gen = claim_gen + 1, claim_request = ? WHERE mac = ? AND claim_gen = ?`,
			h[:], ip, c.Claimed.UnixNano(), boolInt(c.Network), request, mac, b.gen)
		if err != nil {
			return "", Claim{}, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return "", Claim{}, err
		} else if n == 1 {
			return token, c, nil
		}
		// Another claim came between the read and the write: look again.
		if try == 3 {
			return "", Claim{}, fmt.Errorf("terminal %s's boot: claims keep racing; try again", mac)
		}
	}
}

// ClaimedBy reports whether mac's boot was last claimed by request.
func (inv *Inventory) ClaimedBy(ctx context.Context, mac, request string) (bool, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil || request == "" {
		return false, err
	}
	b, err := readBootClaim(ctx, inv.db, mac, "")
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil && b.request == request, err
}

// CheckClaim checks a token presented from address ip for mac's boot into task. It returns the
// claim when the token is the boot's current one and comes from the claiming address; false
// when the token opens nothing (wrong, expired, replaced by a later boot of the same machine, or
// the boot has no claim); and a *RivalError when the token is this boot's, or one a later boot
// replaced, but comes from another address.
func (inv *Inventory) CheckClaim(ctx context.Context, mac, task, token, ip string, now time.Time) (Claim, bool, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Claim{}, false, err
	}
	b, err := readBootClaim(ctx, inv.db, mac, "")
	if errors.Is(err, sql.ErrNoRows) {
		return Claim{}, false, nil
	}
	if err != nil {
		return Claim{}, false, err
	}
	claimIP := b.claimIP
	if token == "" || claimIP == "" || !b.stands(task, now) {
		return Claim{}, false, nil
	}
	h := sha256.Sum256([]byte(token))
	switch {
	case len(b.hash) == len(h) && subtle.ConstantTimeCompare(b.hash, h[:]) == 1:
		if ip != claimIP {
			return Claim{}, false, &RivalError{MAC: mac, Task: task, First: claimIP, Second: ip, Why: "the boot's token used from another address"}
		}
		return b.claim(mac, task), true, nil
	case len(b.prev) == len(h) && subtle.ConstantTimeCompare(b.prev, h[:]) == 1 && ip != claimIP:
		return Claim{}, false, &RivalError{MAC: mac, Task: task, First: claimIP, Second: ip, Why: "a token a later boot replaced, used from another address"}
	}
	// A replaced token from the claiming address is the same machine's earlier boot (a request
	// still in flight when it rebooted, a spent boot token): refused, not a rival.
	return Claim{}, false, nil
}

// bootClaim is the claim columns of a terminal's boot action.
type bootClaim struct {
	task       string
	hash, prev []byte // SHA-256 of the current token and of the one it replaced
	claimIP    string
	claimed    int64 // Unix ns
	network    bool
	expires    int64  // Unix ns; 0: never
	gen        int64  // bumped by each claim
	request    string // the request that made the last claim
}

// readBootClaim reads mac's boot claim; lock is "" or " FOR UPDATE".
func readBootClaim(ctx context.Context, q querier, mac, lock string) (bootClaim, error) {
	var b bootClaim
	err := q.QueryRowContext(ctx, `SELECT task, token_hash, prev_token_hash, claim_ip, claimed, claim_network, expires, claim_gen, claim_request FROM boot_actions WHERE mac = ?`+lock, mac).
		Scan(&b.task, &b.hash, &b.prev, &b.claimIP, &b.claimed, &b.network, &b.expires, &b.gen, &b.request)
	return b, err
}

// stands reports whether the boot action is for task and has not expired at now.
func (b bootClaim) stands(task string, now time.Time) bool {
	return task != "" && b.task == task && (b.expires == 0 || now.Before(time.Unix(0, b.expires)))
}

func (b bootClaim) claim(mac, task string) Claim {
	return Claim{MAC: mac, Task: task, IP: b.claimIP, Claimed: time.Unix(0, b.claimed).UTC(), Network: b.network}
}

// RevokeBoot makes every token of mac's boot into task useless, keeping the boot action so the
// terminal's next boot still finds the task has ended.
func (inv *Inventory) RevokeBoot(ctx context.Context, mac, task string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return err
	}
	_, err = inv.db.ExecContext(ctx, `UPDATE boot_actions SET token_hash = NULL, prev_token_hash = NULL WHERE mac = ? AND task = ?`, mac, task)
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
