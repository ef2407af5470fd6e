-- 0004 incidents as the dispatcher keeps them, the alerts they came from, and a gapless
-- sequence on the audit ledger.

-- What the dispatcher records on an incident beyond 0001's lifecycle columns.
ALTER TABLE incident
    ADD COLUMN alert_key          text,           -- the alert that opened it
    ADD COLUMN repeats            integer NOT NULL DEFAULT 0,  -- later alerts folded into it
    ADD COLUMN last_alert_at      timestamptz,
    ADD COLUMN escalated_at       timestamptz,    -- when it reached escalation_level
    ADD COLUMN arrival_target_s   integer NOT NULL DEFAULT 1800 CHECK (arrival_target_s > 0),
    ADD COLUMN arrival_s          real,           -- arrived_at - opened_at
    ADD COLUMN arrival_on_time    boolean,        -- arrival_s <= arrival_target_s
    ADD COLUMN closed_by          text;           -- 'detector' (condition cleared) or the actor
CREATE INDEX incident_active_idx ON incident (opened_at)
    WHERE state IN ('open', 'acknowledged', 'arrived');

-- Every alert the dispatcher has applied, by its natural key and state: alerts are consumed
-- at least once from Kafka, and a repeat changes nothing.
CREATE TABLE incident_alert (
    alert_key    text NOT NULL,
    state        text NOT NULL CHECK (state IN ('raised', 'cleared')),
    incident_id  uuid REFERENCES incident,
    applied_at   timestamptz NOT NULL,
    PRIMARY KEY (alert_key, state)
);

-- Idempotency of acknowledgements: a request re-sent with the same webhook-id gets the
-- answer the first one got.
CREATE TABLE incident_action (
    request_id   text PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incident,
    action       text NOT NULL,
    actor        text NOT NULL,
    received_at  timestamptz NOT NULL,
    response     jsonb NOT NULL
);

ALTER TABLE webhook_delivery
    ADD COLUMN source_time      timestamptz,  -- when the change that caused it happened
    ADD COLUMN first_attempt_at timestamptz,
    ADD COLUMN dead_at          timestamptz;
CREATE INDEX webhook_delivery_incident_idx ON webhook_delivery (incident_id, endpoint, delivery_id);

-- The ledger's chain order: seq is gapless (appends hold one lock), so a deleted entry shows
-- as a missing number, and each entry's prev_hash is the entry_hash of seq - 1.
ALTER TABLE audit_ledger ADD COLUMN seq bigint NOT NULL;
ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_seq_key UNIQUE (seq);
