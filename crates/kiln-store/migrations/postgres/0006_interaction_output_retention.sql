-- Output retention (PostgreSQL): old interactions' stdout and stderr are emptied by a
-- periodic task (`sessions.output_retention_days`); `output_expired_at` records when, so the
-- API can say the output is gone rather than that it was empty. See ../README.md.
ALTER TABLE interactions ADD COLUMN output_expired_at TIMESTAMPTZ;
-- The retention task finds finished interactions that still hold output, oldest first.
CREATE INDEX interactions_output_kept ON interactions (finished_at)
    WHERE output_expired_at IS NULL AND finished_at IS NOT NULL;
