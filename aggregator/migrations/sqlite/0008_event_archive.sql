-- The event archive (migrations/postgres/0009_event_archive.sql, aggregator/src/archive.rs).
CREATE TABLE IF NOT EXISTS event_batches (
    id         INTEGER PRIMARY KEY,
    node       TEXT NOT NULL,
    ts_min     BIGINT NOT NULL,                 -- event time, Unix ms
    ts_max     BIGINT NOT NULL,                 -- at most ts_min + 5 minutes
    kinds      BIGINT NOT NULL,                 -- a bit per kind present
    n          INTEGER NOT NULL,                -- events in the row
    created_at BIGINT NOT NULL,                 -- wall clock, Unix ms: retention's key
    packed     BOOLEAN NOT NULL,                -- compressed and final; false: a batch's small
                                                -- row, plain, that compaction merges
    frame      BLOB NOT NULL                    -- format byte, then a zstd frame
);
CREATE INDEX IF NOT EXISTS event_batches_node_ts ON event_batches (node, ts_min, id);
CREATE INDEX IF NOT EXISTS event_batches_ts ON event_batches (ts_min, id);
CREATE INDEX IF NOT EXISTS event_batches_created ON event_batches (created_at);
-- Compaction's work, node by node.
CREATE INDEX IF NOT EXISTS event_batches_unpacked ON event_batches (node, id) WHERE NOT packed;
