-- A year of alerts (docs/benchmarks.md#alert-store): every query the API and the dashboard
-- run reads an index in the order it returns, or a pre-aggregated row.

-- Lists filtered by node, rule or status walk the list's own order (newest last_seen first)
-- within the filter, so a page costs its rows, not every alert of the node.
CREATE INDEX IF NOT EXISTS alerts_node_last_seen ON alerts (node, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_rule_last_seen ON alerts (rule_id, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_status_last_seen ON alerts (status, last_seen DESC, id DESC);
DROP INDEX IF EXISTS alerts_node;
DROP INDEX IF EXISTS alerts_rule;

-- Statistics buckets by first_seen: an index-only scan of the window.
CREATE INDEX IF NOT EXISTS alerts_first_seen ON alerts (first_seen) INCLUDE (severity, occurrences);

-- Firings per rule, kept by the store as it inserts and deletes firings (store/sql.rs), so
-- the rule list does not count millions of firings.
CREATE TABLE IF NOT EXISTS rule_counts (
    rule_id    TEXT PRIMARY KEY,
    firings    BIGINT NOT NULL,
    last_fired BIGINT
);
INSERT INTO rule_counts (rule_id, firings, last_fired)
    SELECT rule_id, COUNT(*), MAX(ts) FROM firings GROUP BY rule_id
    ON CONFLICT (rule_id) DO NOTHING;

-- The text filter (`q`, a substring anywhere) through trigrams. pg_trgm ships with
-- PostgreSQL (contrib) and is a trusted extension the database owner may create; where a
-- server lacks it the search still works, by scanning, and the warning says why.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX IF NOT EXISTS alerts_search ON alerts USING gin (search_text gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'auditflow: no trigram index for alert search (%); searches scan', SQLERRM;
END
$$;
