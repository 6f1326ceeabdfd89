-- Each node's log sources as they last reported (the agents' `source_stats` events, one per
-- source and window): what they read, understood and produced. One row per node and source,
-- replaced by every report; the names are the agent's sources only (store/sql.rs).
CREATE TABLE IF NOT EXISTS agent_sources (
    node        TEXT NOT NULL,
    source      TEXT NOT NULL,
    reported_at INTEGER NOT NULL,               -- aggregator clock, Unix ms
    stats       TEXT NOT NULL,                  -- the event's fields, JSON
    PRIMARY KEY (node, source)
);
