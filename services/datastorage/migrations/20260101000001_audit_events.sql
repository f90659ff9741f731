-- Audit events; event_id is producer-chosen and makes delivery idempotent.
CREATE TABLE audit_events (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT        NOT NULL UNIQUE,
    event_type      TEXT        NOT NULL,
    event_timestamp TIMESTAMPTZ NOT NULL,
    correlation_id  TEXT        NOT NULL,
    actor           TEXT        NOT NULL,
    namespace       TEXT,
    resource        TEXT,
    outcome         TEXT        NOT NULL CHECK (outcome IN ('success', 'failure')),
    data            JSONB       NOT NULL DEFAULT '{}'::jsonb,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX audit_events_correlation_id_idx ON audit_events (correlation_id, event_timestamp);
CREATE INDEX audit_events_event_type_idx ON audit_events (event_type, event_timestamp);
