-- Instances (PostgreSQL): a session made from a base image rather than a dataset sample,
-- with a name, labels and the resources it was given. See ../README.md.
-- An instance comes from exactly one source: a sample (dataset, sample_id, sample_version,
-- as before, still checked by the foreign key, which ignores rows with NULLs) or an image
-- reference in Kiln's image store.
ALTER TABLE sessions ALTER COLUMN dataset DROP NOT NULL;
ALTER TABLE sessions ALTER COLUMN sample_id DROP NOT NULL;
ALTER TABLE sessions ALTER COLUMN sample_version DROP NOT NULL;
ALTER TABLE sessions ADD COLUMN image TEXT;
ALTER TABLE sessions ADD COLUMN name TEXT;
-- A JSON object of string keys to string values (TEXT, as the other JSON columns).
ALTER TABLE sessions ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
-- The limits its sandbox was given; NULL for sessions made before they were recorded.
ALTER TABLE sessions ADD COLUMN limit_cpu_millicores BIGINT;
ALTER TABLE sessions ADD COLUMN limit_memory_bytes BIGINT;
ALTER TABLE sessions ADD COLUMN limit_disk_bytes BIGINT;
ALTER TABLE sessions ADD CONSTRAINT sessions_one_source CHECK (
    (image IS NULL AND dataset IS NOT NULL AND sample_id IS NOT NULL AND sample_version IS NOT NULL)
    OR (image IS NOT NULL AND dataset IS NULL AND sample_id IS NULL AND sample_version IS NULL)
);
