-- The event archive (design.md §6.11, aggregator/src/archive.rs): every evaluated event, one
-- node's events of one batch per row (compaction merges small rows into zstd-compressed ones).
CREATE TABLE IF NOT EXISTS event_batches (
    id         BIGSERIAL PRIMARY KEY,
    node       TEXT NOT NULL,
    ts_min     BIGINT NOT NULL,                 -- event time, Unix ms
    ts_max     BIGINT NOT NULL,                 -- at most ts_min + 5 minutes
    kinds      BIGINT NOT NULL,                 -- a bit per kind present
    n          INTEGER NOT NULL,                -- events in the row
    created_at BIGINT NOT NULL,                 -- wall clock, Unix ms: retention's key
    packed     BOOLEAN NOT NULL,                -- compressed and final; false: a batch's small
                                                -- row, plain, that compaction merges
    frame      BYTEA NOT NULL                   -- format byte, then a zstd frame
);
-- A search reads rows in ts_min order, of one node or of all.
CREATE INDEX IF NOT EXISTS event_batches_node_ts ON event_batches (node, ts_min, id);
CREATE INDEX IF NOT EXISTS event_batches_ts ON event_batches (ts_min, id);
CREATE INDEX IF NOT EXISTS event_batches_created ON event_batches (created_at);
-- Compaction's work, node by node.
CREATE INDEX IF NOT EXISTS event_batches_unpacked ON event_batches (node, id) WHERE NOT packed;
-- The frames are compressed already: PostgreSQL's own compression would only cost CPU.
ALTER TABLE event_batches ALTER COLUMN frame SET STORAGE EXTERNAL;
