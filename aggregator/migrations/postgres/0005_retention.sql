-- Retention (store/sql.rs, `retain_batch`) deletes the oldest rows first: by when a firing was
-- stored, and resolved alerts by when they were resolved.
CREATE INDEX IF NOT EXISTS firings_created ON firings (created_at);
CREATE INDEX IF NOT EXISTS alerts_resolved ON alerts (updated_at) WHERE status = 'resolved';
