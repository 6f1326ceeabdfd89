-- The audit_alerts feed in mode "firing" (design.md §8.3): one message per firing, in the
-- order they were stored. The outbox row remembers the last firing it published, and the
-- firings of an alert are read from there in (created_at, id) order.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS sent_firing_at BIGINT;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS sent_firing_id UUID;
CREATE INDEX IF NOT EXISTS firings_feed ON firings (alert_id, created_at, id);
