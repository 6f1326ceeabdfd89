-- The legacy notification service's alerts copied in (migrations/postgres/0008_legacy_imports.sql):
-- the legacy alert_id of every row imported, or found to be AuditFlow's own, so that a second
-- run imports nothing. Retention leaves this record alone.
CREATE TABLE IF NOT EXISTS legacy_imports (
    alert_id    BLOB PRIMARY KEY,               -- the legacy alert_id
    imported_at BIGINT NOT NULL                 -- wall clock, Unix ms
);
