package state

import (
	"context"
	"time"

	"tms/agentwire"
)

// lastDeployedMigration (10) keeps, for each version, when a deploy or update of a terminal
// last finished writing it: what `tms image ls --region` shows as LAST DEPLOYED. It is kept
// apart from tasks, which are pruned.
var lastDeployedMigration = migration{version: 10, sql: `
CREATE TABLE version_deploys (
	version       TEXT PRIMARY KEY,
	last_deployed INTEGER NOT NULL
);
`}

// recordDeployed notes that task t, if it is a deploy or update that finished well, wrote its
// version at now.
func (inv *Inventory) recordDeployed(ctx context.Context, t Task, now time.Time) error {
	if t.State != TaskDone || (t.Kind != agentwire.KindDeploy && t.Kind != agentwire.KindUpdate) || t.Version == "" {
		return nil
	}
	_, err := inv.db.ExecContext(ctx, `INSERT INTO version_deploys (version, last_deployed) VALUES (?, ?)
		ON CONFLICT (version) DO UPDATE SET last_deployed = max(version_deploys.last_deployed, excluded.last_deployed)`, t.Version, now.UTC().UnixNano())
	return err
}

// LastDeployed returns, for each version a deploy or update of a terminal finished writing,
// when it last did.
func (inv *Inventory) LastDeployed(ctx context.Context) (map[string]time.Time, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT version, last_deployed FROM version_deploys`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var v string
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			return nil, err
		}
		out[v] = time.Unix(0, at).UTC()
	}
	return out, rows.Err()
}
