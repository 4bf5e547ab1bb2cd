-- Which node (process with its own runtime root on a data directory) runs each session:
-- start-up recovery and shutdown act only on their own node's sessions. NULL: written
-- before this migration, by the data directory's own node (`kiln serve`).
ALTER TABLE sessions ADD COLUMN node_id TEXT;
CREATE INDEX sessions_node_live ON sessions (node_id) WHERE status IN ('creating', 'ready');
