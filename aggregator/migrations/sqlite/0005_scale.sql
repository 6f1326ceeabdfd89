-- A year of alerts (docs/benchmarks.md#alert-store), SQLite flavour of
-- migrations/postgres/0006_scale.sql: every query the API and the dashboard run reads an
-- index in the order it returns, or a pre-aggregated row.

CREATE INDEX IF NOT EXISTS alerts_node_last_seen ON alerts (node, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_rule_last_seen ON alerts (rule_id, last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_status_last_seen ON alerts (status, last_seen DESC, id DESC);
DROP INDEX IF EXISTS alerts_node;
DROP INDEX IF EXISTS alerts_rule;

-- Statistics buckets by first_seen: a covering index of the window.
CREATE INDEX IF NOT EXISTS alerts_first_seen ON alerts (first_seen, severity, occurrences);

-- Firings per rule, kept by the store as it inserts and deletes firings (store/sql.rs).
CREATE TABLE IF NOT EXISTS rule_counts (
    rule_id    TEXT PRIMARY KEY,
    firings    BIGINT NOT NULL,
    last_fired BIGINT
);
INSERT INTO rule_counts (rule_id, firings, last_fired)
    SELECT rule_id, COUNT(*), MAX(ts) FROM firings WHERE true GROUP BY rule_id
    ON CONFLICT (rule_id) DO NOTHING;

-- The text filter through an FTS5 trigram index. Its documents live in a table of their own
-- whose INTEGER PRIMARY KEY is the FTS rowid: an alert's implicit rowid may change when the
-- file is vacuumed or copied (VACUUM INTO, backups), this key does not. Triggers keep both
-- in step with the alerts table, retention's deletes included.
CREATE TABLE IF NOT EXISTS alert_search_docs (
    doc         INTEGER PRIMARY KEY,
    alert_id    BLOB NOT NULL UNIQUE,
    search_text TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS alert_search USING fts5(
    search_text, content = 'alert_search_docs', content_rowid = 'doc',
    -- Case-sensitive: both the text and the query are lower-cased by the store (Rust's
    -- Unicode rules), so the index matches exactly what the LIKE that follows it checks.
    tokenize = 'trigram case_sensitive 1'
);
CREATE TRIGGER IF NOT EXISTS alert_search_docs_insert AFTER INSERT ON alert_search_docs BEGIN
    INSERT INTO alert_search (rowid, search_text) VALUES (new.doc, new.search_text);
END;
CREATE TRIGGER IF NOT EXISTS alert_search_docs_delete AFTER DELETE ON alert_search_docs BEGIN
    INSERT INTO alert_search (alert_search, rowid, search_text)
        VALUES ('delete', old.doc, old.search_text);
END;
CREATE TRIGGER IF NOT EXISTS alerts_search_insert AFTER INSERT ON alerts BEGIN
    INSERT INTO alert_search_docs (alert_id, search_text) VALUES (new.id, new.search_text);
END;
CREATE TRIGGER IF NOT EXISTS alerts_search_update AFTER UPDATE OF search_text ON alerts BEGIN
    DELETE FROM alert_search_docs WHERE alert_id = old.id;
    INSERT INTO alert_search_docs (alert_id, search_text) VALUES (new.id, new.search_text);
END;
CREATE TRIGGER IF NOT EXISTS alerts_search_delete AFTER DELETE ON alerts BEGIN
    DELETE FROM alert_search_docs WHERE alert_id = old.id;
END;
INSERT INTO alert_search_docs (alert_id, search_text) SELECT id, search_text FROM alerts;
