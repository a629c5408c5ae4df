package state

// probeTaskMigration (14) lets tasks and boot actions be probes: a terminal boots a version of
// the in-memory OS only to say which one it booted (a bootenv rollout's canary). A probe's
// image column holds that version, as a deploy's does.
var probeTaskMigration = migration{version: 14, sql: `
-- SQLite cannot alter a CHECK: both tables are rebuilt with every column (migration 13's claim
-- counter included), rows and indexes kept.
CREATE TABLE tasks_new (
	id        TEXT PRIMARY KEY,
	mac       TEXT NOT NULL,
	kind      TEXT NOT NULL CHECK (kind IN ('capture', 'deploy', 'update', 'probe')),
	image     TEXT NOT NULL,
	state     TEXT NOT NULL CHECK (state IN ('waiting', 'running', 'done', 'failed', 'canceled')),
	waiter    BLOB,
	progress  TEXT NOT NULL DEFAULT '',
	result    TEXT NOT NULL DEFAULT '',
	error     TEXT NOT NULL DEFAULT '',
	created   INTEGER NOT NULL,
	updated   INTEGER NOT NULL,
	base      TEXT NOT NULL DEFAULT ''
);
INSERT INTO tasks_new (id, mac, kind, image, state, waiter, progress, result, error, created, updated, base)
	SELECT id, mac, kind, image, state, waiter, progress, result, error, created, updated, base FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_by_mac ON tasks (mac, created);
CREATE TABLE boot_actions_new (
	mac             TEXT PRIMARY KEY REFERENCES terminals (mac) ON DELETE CASCADE,
	action          TEXT NOT NULL CHECK (action IN ('local', 'capture', 'deploy', 'update', 'probe')),
	task            TEXT NOT NULL DEFAULT '',
	image           TEXT NOT NULL DEFAULT '',
	token_hash      BLOB,
	expires         INTEGER NOT NULL DEFAULT 0,
	prev_token_hash BLOB,
	claim_ip        TEXT NOT NULL DEFAULT '',
	claimed         INTEGER NOT NULL DEFAULT 0,
	claim_network   INTEGER NOT NULL DEFAULT 0,
	claim_gen       BIGINT NOT NULL DEFAULT 0,
	claim_request   TEXT NOT NULL DEFAULT ''
);
INSERT INTO boot_actions_new (mac, action, task, image, token_hash, expires, prev_token_hash, claim_ip, claimed, claim_network, claim_gen, claim_request)
	SELECT mac, action, task, image, token_hash, expires, prev_token_hash, claim_ip, claimed, claim_network, claim_gen, claim_request FROM boot_actions;
DROP TABLE boot_actions;
ALTER TABLE boot_actions_new RENAME TO boot_actions;
`, postgres: `
-- PostgreSQL alters a CHECK in place (its name for a column's CHECK is <table>_<column>_check):
-- every column, and migration 13's claim counter, stay as they are.
ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check,
	ADD CONSTRAINT tasks_kind_check CHECK (kind IN ('capture', 'deploy', 'update', 'probe'));
ALTER TABLE boot_actions DROP CONSTRAINT boot_actions_action_check,
	ADD CONSTRAINT boot_actions_action_check CHECK (action IN ('local', 'capture', 'deploy', 'update', 'probe'));
`}
