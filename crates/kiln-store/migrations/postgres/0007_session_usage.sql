-- Per-session resource usage (PostgreSQL): what the sandbox used, sampled while it
-- runs and once more before it is destroyed. All NULL until the first sample (`usage_at`);
-- a column stays NULL where the host does not report that resource. See ../README.md.
ALTER TABLE sessions ADD COLUMN usage_cpu_micros BIGINT;
ALTER TABLE sessions ADD COLUMN usage_memory_peak_bytes BIGINT;
ALTER TABLE sessions ADD COLUMN usage_disk_used_bytes BIGINT;
ALTER TABLE sessions ADD COLUMN usage_disk_limit_bytes BIGINT;
ALTER TABLE sessions ADD COLUMN usage_pids_peak BIGINT;
ALTER TABLE sessions ADD COLUMN usage_at TIMESTAMPTZ;
