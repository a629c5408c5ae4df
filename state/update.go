package state

// updateTaskMigration (5) lets tasks and boot actions be updates, and gives tasks the version
// an update's terminal holds (tasks.base).
var updateTaskMigration = migration{version: 5, sql: `
-- Tasks and boot actions of kind 'update' (an incremental write from the version a terminal
-- holds, tasks.base). SQLite cannot alter a CHECK: both tables are rebuilt, rows and indexes kept.
CREATE TABLE tasks_new (
	id        TEXT PRIMARY KEY,
	mac       TEXT NOT NULL,
	kind      TEXT NOT NULL CHECK (kind IN ('capture', 'deploy', 'update')),
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
INSERT INTO tasks_new (id, mac, kind, image, state, waiter, progress, result, error, created, updated)
	SELECT id, mac, kind, image, state, waiter, progress, result, error, created, updated FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_by_mac ON tasks (mac, created);
CREATE TABLE boot_actions_new (
	mac             TEXT PRIMARY KEY REFERENCES terminals (mac) ON DELETE CASCADE,
	action          TEXT NOT NULL CHECK (action IN ('local', 'capture', 'deploy', 'update')),
	task            TEXT NOT NULL DEFAULT '',
	image           TEXT NOT NULL DEFAULT '',
	token_hash      BLOB,
	expires         INTEGER NOT NULL DEFAULT 0,
	prev_token_hash BLOB,
	claim_ip        TEXT NOT NULL DEFAULT '',
	claimed         INTEGER NOT NULL DEFAULT 0,
	claim_network   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO boot_actions_new (mac, action, task, image, token_hash, expires, prev_token_hash, claim_ip, claimed, claim_network)
	SELECT mac, action, task, image, token_hash, expires, prev_token_hash, claim_ip, claimed, claim_network FROM boot_actions;
DROP TABLE boot_actions;
ALTER TABLE boot_actions_new RENAME TO boot_actions;
`, postgres: `
-- PostgreSQL alters a CHECK in place. Its name for a column's CHECK is <table>_<column>_check.
ALTER TABLE tasks DROP CONSTRAINT tasks_kind_check,
	ADD CONSTRAINT tasks_kind_check CHECK (kind IN ('capture', 'deploy', 'update')),
	ADD COLUMN base TEXT NOT NULL DEFAULT '';
ALTER TABLE boot_actions DROP CONSTRAINT boot_actions_action_check,
	ADD CONSTRAINT boot_actions_action_check CHECK (action IN ('local', 'capture', 'deploy', 'update'));
`}
