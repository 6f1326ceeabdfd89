-- The legacy notification service's alerts copied in by `auditflow-aggregator import-legacy`
-- (docs/legacy.md): the legacy alert_id of every row imported, or found to be AuditFlow's own,
-- so that a second run imports nothing. An imported alert has the legacy alert_id as its id.
-- Retention leaves this record alone: a legacy alert that retention deleted is not imported
-- again. It grows only with the legacy table, which no longer grows.
CREATE TABLE IF NOT EXISTS legacy_imports (
    alert_id    UUID PRIMARY KEY,               -- the legacy alert_id
    imported_at BIGINT NOT NULL                 -- wall clock, Unix ms
);

-- AuditFlow's tables live in a schema of their own, alone on the search path
-- (store/postgres.rs). Where pg_trgm was already installed in another schema (public, by
-- another application of a shared database), 0006 found no `gin_trgm_ops` there and created
-- no search index: name the operator class with its schema.
DO $$
DECLARE
    trgm name;
BEGIN
    IF to_regclass('alerts_search') IS NULL THEN
        SELECT n.nspname INTO trgm FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname = 'pg_trgm';
        IF trgm IS NOT NULL THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS alerts_search ON alerts USING gin (search_text %I.gin_trgm_ops)', trgm);
        END IF;
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'auditflow: no trigram index for alert search (%); searches scan', SQLERRM;
END
$$;
