package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // region time zones are checked wherever tms runs, with or without the system's zoneinfo

	"tms/manifest"
	"tms/store"
)

var catalogMigrations = []migration{{version: 1, sql: `
CREATE TABLE regions (
	id        TEXT PRIMARY KEY,
	labels    TEXT NOT NULL DEFAULT '{}',
	capacity  INTEGER NOT NULL DEFAULT 0,
	used      INTEGER NOT NULL DEFAULT 0,
	endpoint  TEXT NOT NULL DEFAULT '',
	last_seen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE versions (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	parent       TEXT NOT NULL DEFAULT '',
	created      INTEGER NOT NULL,
	disk_size    INTEGER NOT NULL,
	chunk_size   INTEGER NOT NULL,
	stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX versions_by_name ON versions (name, created);
CREATE TABLE tags (
	name    TEXT NOT NULL,
	tag     TEXT NOT NULL,
	version TEXT NOT NULL REFERENCES versions (id) ON DELETE CASCADE,
	PRIMARY KEY (name, tag)
);
CREATE TABLE locations (
	version TEXT NOT NULL REFERENCES versions (id) ON DELETE CASCADE,
	region  TEXT NOT NULL REFERENCES regions (id) ON DELETE CASCADE,
	state   TEXT NOT NULL CHECK (state IN ('pending', 'verified')),
	updated INTEGER NOT NULL,
	PRIMARY KEY (version, region)
);
`}, {version: 2, sql: `
ALTER TABLE versions ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN signature BLOB;
`}, {version: 3, sql: `
ALTER TABLE regions ADD COLUMN timezone TEXT NOT NULL DEFAULT '';
`}, regionSettingsMigration, {version: 5, sql: `
CREATE TABLE users (
	name          TEXT PRIMARY KEY,
	role          TEXT NOT NULL,
	regions       TEXT NOT NULL DEFAULT '[]',
	password_hash TEXT NOT NULL,
	created       INTEGER NOT NULL,
	updated       INTEGER NOT NULL
);
`}, regionServersMigration, bootEnvsMigration}

// Catalog is central's catalog: regions, image versions and tags, and which regions hold a
// verified copy of which version.
type Catalog struct{ db *database }

// OpenCatalog opens (creating if needed) the catalog database at path.
func OpenCatalog(ctx context.Context, path string, opts ...Option) (*Catalog, error) {
	db, err := open(ctx, path, catalogMigrations, opts...)
	if err != nil {
		return nil, err
	}
	return &Catalog{db: db}, nil
}

// Close closes the database.
func (c *Catalog) Close() error { return c.db.Close() }

// Region describes one region as central knows it.
type Region struct {
	ID       string
	Labels   map[string]string // topology: site, zone, …
	Capacity int64             // bytes its store may use
	Used     int64
	Endpoint string // data endpoint peers pull from, http(s)://host:port
	LastSeen time.Time
	// Timezone is the IANA name of the zone the region's schedules are written in, like
	// Europe/Berlin; empty for a region that registered before regions reported one.
	Timezone string
}

var regionID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidateRegionID checks a region id: lowercase letters, digits and '-', at most 63.
func ValidateRegionID(id string) error {
	if !regionID.MatchString(id) {
		return fmt.Errorf("region id %q: use lowercase letters, digits and '-', at most 63, starting with a letter or digit", id)
	}
	return nil
}

func notFound(what string) error { return fmt.Errorf("%s: %w", what, store.ErrNotFound) }

// UpsertRegion creates or updates a region.
func (c *Catalog) UpsertRegion(ctx context.Context, r Region) error {
	if err := ValidateRegionID(r.ID); err != nil {
		return err
	}
	if r.Endpoint != "" && !strings.HasPrefix(r.Endpoint, "http://") && !strings.HasPrefix(r.Endpoint, "https://") {
		return fmt.Errorf("region %s: endpoint %q is not an http(s) URL", r.ID, r.Endpoint)
	}
	if r.Timezone != "" {
		if _, err := time.LoadLocation(r.Timezone); err != nil || r.Timezone == "Local" {
			return fmt.Errorf("region %s: time zone %q is not an IANA zone name like Europe/Berlin", r.ID, r.Timezone)
		}
	}
	labels, _ := json.Marshal(r.Labels)
	_, err := c.db.ExecContext(ctx, `INSERT INTO regions (id, labels, capacity, used, endpoint, last_seen, timezone) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity, used = excluded.used,
		endpoint = excluded.endpoint, last_seen = excluded.last_seen, timezone = excluded.timezone`,
		r.ID, string(labels), r.Capacity, r.Used, r.Endpoint, r.LastSeen.UTC().UnixNano(), r.Timezone)
	return err
}

func scanRegion(row interface{ Scan(...any) error }) (Region, error) {
	var r Region
	var labels string
	var seen int64
	if err := row.Scan(&r.ID, &labels, &r.Capacity, &r.Used, &r.Endpoint, &seen, &r.Timezone); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
		return r, fmt.Errorf("region %s: labels: %w", r.ID, err)
	}
	if seen != 0 {
		r.LastSeen = time.Unix(0, seen).UTC()
	}
	return r, nil
}

const regionCols = `id, labels, capacity, used, endpoint, last_seen, timezone`

// GetRegion returns region id.
func (c *Catalog) GetRegion(ctx context.Context, id string) (Region, error) {
	r, err := scanRegion(c.db.QueryRowContext(ctx, `SELECT `+regionCols+` FROM regions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, notFound("region " + id)
	}
	return r, err
}

// CountRegions counts the regions the catalog knows.
func (c *Catalog) CountRegions(ctx context.Context) (int64, error) {
	var n int64
	if err := c.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM regions`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting regions: %w", err)
	}
	return n, nil
}

// ListRegions returns every region, by id.
func (c *Catalog) ListRegions(ctx context.Context) ([]Region, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+regionCols+` FROM regions ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Region
	for rows.Next() {
		r, err := scanRegion(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Version is an image version as the catalog records it.
type Version struct {
	ID          manifest.ID
	Name        string
	Parent      manifest.ID
	Created     time.Time
	DiskSize    int64
	ChunkSize   int64
	StoredBytes int64
	// KeyID and Signature are central's signature of the version (package signing); empty for
	// a version recorded before central signed what it registers.
	KeyID     string
	Signature []byte
}

// RecordVersion records a version (again: recording an existing version changes nothing but its
// stored bytes and, if v carries one, its signature), and points NAME:TAG at it if tag is not
// empty.
func (c *Catalog) RecordVersion(ctx context.Context, v Version, tag string) error {
	if err := manifest.ValidateName(v.Name); err != nil {
		return err
	}
	if v.ID.IsZero() {
		return errors.New("version id is missing")
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO versions (id, name, parent, created, disk_size, chunk_size, stored_bytes, key_id, signature)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET stored_bytes = excluded.stored_bytes,
		key_id = CASE WHEN excluded.key_id != '' THEN excluded.key_id ELSE versions.key_id END,
		signature = CASE WHEN excluded.key_id != '' THEN excluded.signature ELSE versions.signature END`,
		v.ID.String(), v.Name, v.Parent.String(), v.Created.UTC().UnixNano(), v.DiskSize, v.ChunkSize, v.StoredBytes, v.KeyID, v.Signature); err != nil {
		return err
	}
	if tag != "" {
		if err := manifest.ValidateTag(tag); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO tags (name, tag, version) VALUES (?, ?, ?)
			ON CONFLICT (name, tag) DO UPDATE SET version = excluded.version`, v.Name, tag, v.ID.String()); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Resolve finds the version an image reference names: NAME, NAME:TAG or NAME@PREFIX.
func (c *Catalog) Resolve(ctx context.Context, refStr string) (manifest.ID, error) {
	ref, err := manifest.ParseRef(refStr)
	if err != nil {
		return manifest.ID{}, err
	}
	var ids []string
	if ref.Version == "" {
		var id string
		err := c.db.QueryRowContext(ctx, `SELECT version FROM tags WHERE name = ? AND tag = ?`, ref.Name, ref.Tag).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return manifest.ID{}, notFound("image " + ref.String())
		}
		if err != nil {
			return manifest.ID{}, err
		}
		ids = []string{id}
	} else {
		rows, err := c.db.QueryContext(ctx, `SELECT id FROM versions WHERE name = ? AND substr(id, 1, ?) = ?`, ref.Name, len(ref.Version), ref.Version)
		if err != nil {
			return manifest.ID{}, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return manifest.ID{}, err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return manifest.ID{}, err
		}
	}
	switch len(ids) {
	case 0:
		return manifest.ID{}, notFound("image " + ref.String())
	case 1:
		return manifest.ParseID(ids[0])
	}
	sort.Strings(ids)
	return manifest.ID{}, fmt.Errorf("image %s: version prefix %q is ambiguous (%d versions): give more digits", ref, ref.Version, len(ids))
}

// Location states.
const (
	Pending  = "pending"
	Verified = "verified"
)

// SetLocation records that region holds version id in state (Pending while a copy is under
// way, Verified once every chunk was checked there).
func (c *Catalog) SetLocation(ctx context.Context, id manifest.ID, region, state string) error {
	if state != Pending && state != Verified {
		return fmt.Errorf("location state %q is not %s or %s", state, Pending, Verified)
	}
	_, err := c.db.ExecContext(ctx, `INSERT INTO locations (version, region, state, updated) VALUES (?, ?, ?, ?)
		ON CONFLICT (version, region) DO UPDATE SET state = excluded.state, updated = excluded.updated`,
		id.String(), region, state, time.Now().UTC().UnixNano())
	if isForeignKey(err) {
		return fmt.Errorf("location of %s in %s: unknown version or region: %w", id.Short(), region, store.ErrNotFound)
	}
	return err
}

// RemoveLocation forgets that region holds version id (after an eviction, say).
func (c *Catalog) RemoveLocation(ctx context.Context, id manifest.ID, region string) error {
	_, err := c.db.ExecContext(ctx, `DELETE FROM locations WHERE version = ? AND region = ?`, id.String(), region)
	return err
}

// Location is a region holding a version.
type Location struct {
	Region  Region
	State   string
	Updated time.Time
}

// Locations lists the regions holding version id, verified ones first, then by region id.
func (c *Catalog) Locations(ctx context.Context, id manifest.ID) ([]Location, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT r.id, r.labels, r.capacity, r.used, r.endpoint, r.last_seen, l.state, l.updated
		FROM locations l JOIN regions r ON r.id = l.region WHERE l.version = ?
		ORDER BY l.state = 'verified' DESC, r.id`, id.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Location
	for rows.Next() {
		var l Location
		var labels string
		var seen, updated int64
		if err := rows.Scan(&l.Region.ID, &labels, &l.Region.Capacity, &l.Region.Used, &l.Region.Endpoint, &seen, &l.State, &updated); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(labels), &l.Region.Labels); err != nil {
			return nil, err
		}
		if seen != 0 {
			l.Region.LastSeen = time.Unix(0, seen).UTC()
		}
		l.Updated = time.Unix(0, updated).UTC()
		out = append(out, l)
	}
	return out, rows.Err()
}

// StoredBytes returns the stored bytes central recorded for version id (ErrNotFound if it has
// no such version).
func (c *Catalog) StoredBytes(ctx context.Context, id manifest.ID) (int64, error) {
	var n int64
	err := c.db.QueryRowContext(ctx, `SELECT stored_bytes FROM versions WHERE id = ?`, id.String()).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("version %s: %w", id.Short(), store.ErrNotFound)
	}
	return n, err
}

// VersionEntry is a version with its tags and the regions holding it, for listings.
type VersionEntry struct {
	Version
	Tags      []string   // tags pointing at it
	Locations []Location // regions holding it, verified first
}

// Versions lists every version, by name and then newest first, with tags and locations.
func (c *Catalog) Versions(ctx context.Context) ([]VersionEntry, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT id, name, parent, created, disk_size, chunk_size, stored_bytes, key_id, signature FROM versions ORDER BY name, created DESC, id`)
	if err != nil {
		return nil, err
	}
	var out []VersionEntry
	for rows.Next() {
		var e VersionEntry
		var id, parent string
		var created int64
		if err := rows.Scan(&id, &e.Name, &parent, &created, &e.DiskSize, &e.ChunkSize, &e.StoredBytes, &e.KeyID, &e.Signature); err != nil {
			rows.Close()
			return nil, err
		}
		if e.ID, err = manifest.ParseID(id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("version %q: %w", id, err)
		}
		if parent != "" {
			if e.Parent, err = manifest.ParseID(parent); err != nil {
				rows.Close()
				return nil, fmt.Errorf("version %s: parent %q: %w", id, parent, err)
			}
		}
		e.Created = time.Unix(0, created).UTC()
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	tags, err := c.db.QueryContext(ctx, `SELECT version, tag FROM tags ORDER BY tag`)
	if err != nil {
		return nil, err
	}
	byID := map[string][]string{}
	for tags.Next() {
		var v, tag string
		if err := tags.Scan(&v, &tag); err != nil {
			tags.Close()
			return nil, err
		}
		byID[v] = append(byID[v], tag)
	}
	tags.Close()
	if err := tags.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Tags = byID[out[i].ID.String()]
		if out[i].Locations, err = c.Locations(ctx, out[i].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}
