-- Which node runs each agent job and prepares each base image (issue 12): a node's
-- start-up recovery ends only its own work cut off by its restart (and that of nodes the
-- registry has down), never a live node's; a node marked down has its jobs ended.
-- NULL: stored before this migration, or by a server with no node of its own.
ALTER TABLE agent_jobs ADD COLUMN node_id TEXT;
ALTER TABLE base_images ADD COLUMN node_id TEXT;
-- A node's own figures as of its last heartbeat (a JSON object: sandbox CPU, memory and
-- disk against its budgets, recent create and command latencies): the admin API's
-- /v1/admin/servers/{id}/metrics.
ALTER TABLE nodes ADD COLUMN stats TEXT NOT NULL DEFAULT '{}';
