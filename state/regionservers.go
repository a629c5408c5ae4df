package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Central keeps the server list of each region's latest status report (a region may run
// several servers), so that `tms region ls` shows them and what they run while central's
// service workflow starts afresh or the region is offline.

var regionServersMigration = migration{version: 11, sql: `
-- The servers of each region as its latest status report listed them.
CREATE TABLE region_servers (
	region    TEXT NOT NULL REFERENCES regions (id) ON DELETE CASCADE,
	id        TEXT NOT NULL,
	labels    TEXT NOT NULL DEFAULT '{}',
	endpoint  TEXT NOT NULL DEFAULT '',
	boot_addr TEXT NOT NULL DEFAULT '',
	dhcp      TEXT NOT NULL DEFAULT '',
	version   TEXT NOT NULL DEFAULT '',
	bootenv   TEXT NOT NULL DEFAULT '',
	started   BIGINT NOT NULL DEFAULT 0,
	last_seen BIGINT NOT NULL DEFAULT 0,
	healthy   BIGINT NOT NULL DEFAULT 0,
	reported  BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (region, id)
);
`}

// RegionServer is one of a region's servers as its latest report listed it.
type RegionServer struct {
	Server
	// Healthy: the server heartbeated recently when the region made the report.
	Healthy bool
	// Reported is when central received that report.
	Reported time.Time
}

// SetRegionServers replaces the servers central keeps for region with servers (at most
// MaxServersListed, each checked as the registry checks them). A region central does not know
// is not found.
func (c *Catalog) SetRegionServers(ctx context.Context, region string, servers []RegionServer, reported time.Time) error {
	if err := ValidateRegionID(region); err != nil {
		return err
	}
	if len(servers) > MaxServersListed {
		return fmt.Errorf("region %s: %d servers, at most %d", region, len(servers), MaxServersListed)
	}
	for _, s := range servers {
		if err := s.check(); err != nil {
			return fmt.Errorf("region %s: %w", region, err)
		}
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM regions WHERE id = ?`, region).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return notFound("region " + region)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM region_servers WHERE region = ?`, region); err != nil {
		return fmt.Errorf("region %s: servers: %w", region, err)
	}
	for _, s := range servers {
		labels, err := json.Marshal(nonNilLabels(s.Labels))
		if err != nil {
			return err
		}
		healthy := 0
		if s.Healthy {
			healthy = 1
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO region_servers (region, id, labels, endpoint, boot_addr, dhcp, version, bootenv,
			started, last_seen, healthy, reported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (region, id) DO NOTHING`,
			region, s.ID, string(labels), s.Endpoint, s.BootAddr, s.DHCP, s.Version, s.BootEnv, s.Started.UTC().UnixNano(),
			s.LastSeen.UTC().UnixNano(), healthy, reported.UTC().UnixNano()); err != nil {
			return fmt.Errorf("region %s: server %s: %w", region, s.ID, err)
		}
	}
	return tx.Commit()
}

// RegionServers returns the servers central keeps, by region, each region's by id.
func (c *Catalog) RegionServers(ctx context.Context) (map[string][]RegionServer, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT region, id, labels, endpoint, boot_addr, dhcp, version, bootenv, started, last_seen, healthy, reported
		FROM region_servers ORDER BY region, id`)
	if err != nil {
		return nil, fmt.Errorf("region servers: %w", err)
	}
	defer rows.Close()
	out := map[string][]RegionServer{}
	for rows.Next() {
		var region, labels string
		var s RegionServer
		var started, seen, healthy, reported int64
		if err := rows.Scan(&region, &s.ID, &labels, &s.Endpoint, &s.BootAddr, &s.DHCP, &s.Version, &s.BootEnv, &started, &seen, &healthy, &reported); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(labels), &s.Labels); err != nil {
			return nil, fmt.Errorf("region %s: server %s: labels: %w", region, s.ID, err)
		}
		s.Started, s.LastSeen, s.Reported = time.Unix(0, started).UTC(), time.Unix(0, seen).UTC(), time.Unix(0, reported).UTC()
		s.Healthy = healthy != 0
		out[region] = append(out[region], s)
	}
	return out, rows.Err()
}
