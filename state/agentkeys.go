package state

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
)

// AgentKeySize is the length of a terminal's agent key in bytes.
const AgentKeySize = 32

// An agent key is a secret a terminal's own agent keeps (in tms dev the simulated terminal's
// agent; on a lab PC the agent service of its installed OS). The agent signs its requests with
// it (package agentwire's request signatures) and never sends it: a bystander who reads a request
// learns nothing that lets it speak for the terminal. The region keeps the key itself, since it
// must check the signatures; a stolen region disk therefore holds every terminal's key (see
// docs/security.md).

// IssueAgentKey makes a new agent key for an enrolled terminal, replacing any key it had, and
// returns it. Only the terminal's agent should ever see it.
func (inv *Inventory) IssueAgentKey(ctx context.Context, mac string) ([]byte, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	key := make([]byte, AgentKeySize)
	rand.Read(key)
	res, err := inv.db.ExecContext(ctx, `UPDATE terminals SET agent_key = ? WHERE mac = ? AND enrolled = 1`, key, mac)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, notFound("enrolled terminal " + mac)
	}
	return key, nil
}

// AgentKey returns an enrolled terminal's agent key; not found if it is not enrolled or has none.
func (inv *Inventory) AgentKey(ctx context.Context, mac string) ([]byte, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	var key []byte
	err = inv.db.QueryRowContext(ctx, `SELECT agent_key FROM terminals WHERE mac = ? AND enrolled = 1`, mac).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) || err == nil && len(key) != AgentKeySize {
		return nil, notFound("agent key of terminal " + mac)
	}
	return key, err
}
