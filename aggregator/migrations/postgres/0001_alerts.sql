-- Alerts fold firings by fingerprint while open (DESIGN §6).
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
    first_seen       TIMESTAMPTZ NOT NULL,      -- event time of the first firing
    last_seen        TIMESTAMPTZ NOT NULL,      -- event time of the latest firing
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    correlation_id   UUID NOT NULL,             -- the first triggering event
    evidence         JSONB NOT NULL,            -- the latest triggering events (legacy JSON), newest first
    remediation      TEXT,
    playbook_url     TEXT
);
-- At most one unresolved alert per fingerprint: new firings fold into it.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved_fingerprint ON alerts (fingerprint) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_last_seen ON alerts (last_seen DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule_id);
CREATE INDEX IF NOT EXISTS alerts_node ON alerts (node);

-- Every firing once: a redelivered or replayed firing (same deterministic id) is recognised.
CREATE TABLE IF NOT EXISTS firings (
    id          UUID PRIMARY KEY,
    alert_id    UUID,
    rule_id     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    count       INTEGER NOT NULL,
    node        TEXT NOT NULL,
    event_id    UUID NOT NULL,
    event       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS firings_alert ON firings (alert_id);
