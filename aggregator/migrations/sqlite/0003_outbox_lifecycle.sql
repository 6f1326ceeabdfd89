-- An outbox row follows its alert: what was last delivered to the channel (the alert's
-- status and occurrences then, and how many updates were sent), so that the notifier
-- announces each change once (notify/policy.rs). The store puts a delivered row back to
-- pending when its alert changes.
ALTER TABLE outbox ADD COLUMN sent_status TEXT;
ALTER TABLE outbox ADD COLUMN sent_occurrences INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN updates_sent INTEGER NOT NULL DEFAULT 0;
-- Rows delivered before this migration announced their alert's creation.
UPDATE outbox SET sent_status = 'open' WHERE state = 'delivered' AND sent_status IS NULL;
