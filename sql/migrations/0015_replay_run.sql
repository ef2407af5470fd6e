-- 0015 replays that never reach the live platform (issue 16, part 4).

-- One row per replay run: what `tianyan replay --run-id` published, to which topic, and the
-- range and elevators it covers (what `tianyan replay report` compares with the live
-- alerts). published_at is set once every message of the run is in Kafka; a replay worker
-- (`tianyan worker --replay-run`) finishes only then, and records the thresholds it ran with
-- and the elevators it met.
CREATE TABLE replay_run (
    run_id            text PRIMARY KEY CHECK (run_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    topic             text NOT NULL,
    source            text NOT NULL,
    range_start       timestamptz,
    range_end         timestamptz,
    elevators         text[] NOT NULL DEFAULT '{}',
    districts         text[] NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    messages          bigint,
    published_at      timestamptz,
    thresholds        jsonb,
    thresholds_file   text,
    detected_at       timestamptz,
    -- the elevators the replay worker met in the run: the report compares on these only
    elevators_seen    text[],
    CHECK (range_end IS NULL OR range_start < range_end)
);

-- The alerts a replay worker raised, by run: never the live `alert` table, never the alerts
-- topic, so no incident, webhook or device command comes of them. Same columns as `alert`.
CREATE TABLE replay_alert (
    run_id              text NOT NULL REFERENCES replay_run ON DELETE CASCADE,
    alert_id            uuid NOT NULL,
    alert_key           text NOT NULL,
    state               text NOT NULL CHECK (state IN ('raised', 'cleared')),
    raised_at           timestamptz NOT NULL,
    condition_since     timestamptz NOT NULL,
    elevator_id         char(20) COLLATE "C" NOT NULL,
    alert_type          text NOT NULL,
    gb_code             char(2),
    severity            text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'info')),
    detector            text NOT NULL,
    estimated_trapped   smallint,
    evidence            jsonb NOT NULL,
    probable_cause      text,
    suggested_handling  text,
    PRIMARY KEY (run_id, alert_id)
);
CREATE INDEX replay_alert_onset_idx ON replay_alert (run_id, elevator_id, alert_type, condition_since);
