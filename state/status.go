package state

import "context"

// GroupTargets returns, for each group whose members have been deployed or updated, the version
// its latest deploy or update wrote or is writing: what `tms status` calls the group's target.
// Groups no deploy or update has reached are absent. A group's target is read off its members'
// terminal tasks, so it follows the group's history without a column of its own.
func (inv *Inventory) GroupTargets(ctx context.Context) (map[string]string, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT g.grp, t.image FROM tasks t JOIN group_members g ON g.mac = t.mac
		WHERE t.kind IN ('deploy', 'update') AND t.image != '' ORDER BY t.created, t.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var grp, version string
		if err := rows.Scan(&grp, &version); err != nil {
			return nil, err
		}
		out[grp] = version // the latest wins
	}
	return out, rows.Err()
}

// GroupsOf returns the groups each terminal (by MAC) belongs to, sorted by name.
func (inv *Inventory) GroupsOf(ctx context.Context) (map[string][]string, error) {
	rows, err := inv.db.QueryContext(ctx, `SELECT mac, grp FROM group_members ORDER BY grp`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var mac, grp string
		if err := rows.Scan(&mac, &grp); err != nil {
			return nil, err
		}
		out[mac] = append(out[mac], grp)
	}
	return out, rows.Err()
}
