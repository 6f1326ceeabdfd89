-- The alert store (DESIGN §6). Times are Unix milliseconds (BIGINT) so that the PostgreSQL and
-- SQLite schemas, and the SQL the store runs against them, are the same.
--
-- 0001 was the first sketch (TIMESTAMPTZ times, evidence in a JSONB column) and only ever ran
-- in development builds, never a release: its tables are replaced, not converted.
DROP TABLE IF EXISTS firings;
DROP TABLE IF EXISTS alerts;

-- Alerts fold firings by fingerprint while open.
CREATE TABLE IF NOT EXISTS alerts (
    id               UUID PRIMARY KEY,          -- the first firing's id (deterministic)
    fingerprint      TEXT NOT NULL,             -- rule id / group values
    rule_id          TEXT NOT NULL,
    rule_name        TEXT NOT NULL,
    rule_description TEXT NOT NULL,
    severity         TEXT NOT NULL,             -- INFO, WARNING, CRITICAL
    title            TEXT NOT NULL,
    tags             JSONB NOT NULL,
    node             TEXT NOT NULL,
    group_values     JSONB NOT NULL,            -- {"user": "alice", "host": "pi-1"}
    status           TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    occurrences      BIGINT NOT NULL,           -- firings folded into this alert
    first_seen       BIGINT NOT NULL,           -- event time of the first firing
    last_seen        BIGINT NOT NULL,           -- event time of the latest firing
    created_at       BIGINT NOT NULL,           -- wall clock
    updated_at       BIGINT NOT NULL,           -- wall clock, any change
    correlation_id   UUID NOT NULL,             -- the first triggering event
    raw_event        JSONB NOT NULL,            -- the first triggering event (legacy JSON)
    remediation      TEXT,
    playbook_url     TEXT,
    silenced         BOOLEAN NOT NULL DEFAULT FALSE, -- a silence matched when it was created
    search_text      TEXT NOT NULL              -- lower-case title, rule, node and group values
);
-- At most one unresolved alert per fingerprint: new firings fold into it.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved_fingerprint ON alerts (fingerprint) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_last_seen ON alerts (last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_created ON alerts (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule_id);
CREATE INDEX IF NOT EXISTS alerts_node ON alerts (node);

-- Every firing once: a redelivered or replayed firing (same deterministic id) is recognised.
-- The newest firings of an alert are its evidence.
CREATE TABLE IF NOT EXISTS firings (
    id          UUID PRIMARY KEY,
    alert_id    UUID,
    rule_id     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    node        TEXT NOT NULL,
    event_id    UUID NOT NULL,
    event       JSONB NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS firings_alert ON firings (alert_id, ts DESC);
CREATE INDEX IF NOT EXISTS firings_rule ON firings (rule_id);

-- Lifecycle changes: who, when, why.
CREATE TABLE IF NOT EXISTS alert_history (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    UUID NOT NULL REFERENCES alerts (id),
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    comment     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history (alert_id, id);

-- Silences suppress notification, never storage.
CREATE TABLE IF NOT EXISTS silences (
    id          UUID PRIMARY KEY,
    matchers    JSONB NOT NULL,                 -- [{"field": "node", "value": "pi-1"}]
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The fleet, from heartbeats.
CREATE TABLE IF NOT EXISTS agents (
    node             TEXT PRIMARY KEY,
    version          TEXT NOT NULL,
    rules_version    TEXT NOT NULL,
    first_seen       BIGINT NOT NULL,           -- aggregator clock
    last_seen        BIGINT NOT NULL,           -- aggregator clock
    uptime_secs      BIGINT NOT NULL,
    spool_bytes      BIGINT NOT NULL,
    events_sent      BIGINT NOT NULL,
    dropped          BIGINT NOT NULL,
    drops            JSONB NOT NULL,            -- {"queue_full": 3}
    prev_events_sent BIGINT NOT NULL,           -- the heartbeat before: for events/s
    prev_seen        BIGINT NOT NULL
);

-- Deliveries to notification channels and the audit_alerts queue, written in the same
-- transaction as the alert they announce; the notifier sends them with retries.
CREATE TABLE IF NOT EXISTS outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     UUID NOT NULL REFERENCES alerts (id),
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'skipped')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (alert_id, channel)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at);
