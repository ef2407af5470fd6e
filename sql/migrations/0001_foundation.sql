-- 0001 foundation: roles, the elevator registry, telemetry, windows, trips, alerts,
-- incidents, webhook outbox, risk grades and the audit ledger.
--
-- Frozen once released: change the schema in a new numbered file. Views, functions and
-- grants live in sql/idempotent/ and are re-applied on every migrate.
--
-- Chunk intervals, sized for a city of 40,000 elevators (≈ 10,000 moving at peak, each
-- sending one 10 Hz batch per second ≈ 100,000 samples/s). TimescaleDB's guidance is that
-- the chunks being written, with their indexes, fit in about a quarter of memory:
--   telemetry_sample  15 min: ≈ 90 M rows at peak, a few GB; 7 days of retention is
--                      672 chunks, dropped whole by the pipeline's own drop_chunks.
--   window_feature     6 h: one 1-s row per moving elevator-second plus one 1-min row
--                      per elevator-minute, ≈ 100-200 M rows per chunk at peak.
--   trip               7 days: ≈ 300 trips per elevator per day, ≈ 85 M rows per chunk.
--   evidence_sample    7 days: only the samples around incidents.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Roles are cluster-wide; several tianyan databases in one cluster share them.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['tianyan_writer', 'tianyan_analyst', 'tianyan_regulator', 'tianyan_public'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      -- LOGIN without a password: usable only where pg_hba trusts or maps the client
      -- (the local stack); a deployment sets passwords or certificates.
      EXECUTE format('CREATE ROLE %I LOGIN', r);
    END IF;
  END LOOP;
END $$;

CREATE SCHEMA tianyan;

DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET search_path = tianyan, public', current_database());
END $$;

-- (the migrator sets search_path = tianyan, public for every migration)

-- The elevator registry: the fusion of the user units', inspection agency's and
-- regulator's records, one row per registration code.
CREATE TABLE elevator (
    registration_code    char(20) COLLATE "C" PRIMARY KEY CHECK (registration_code ~ '^[0-9]{20}$'),
    address              text NOT NULL,
    district             text NOT NULL,
    latitude             double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude            double precision CHECK (longitude BETWEEN -180 AND 180),
    building_type        text NOT NULL CHECK (building_type IN
                           ('residential', 'office', 'hospital', 'school', 'mall', 'station', 'government')),
    user_unit            text,
    property_managed     boolean NOT NULL DEFAULT false,
    rated_speed_mps      double precision NOT NULL CHECK (rated_speed_mps > 0 AND rated_speed_mps <= 20),
    rated_load_kg        double precision NOT NULL CHECK (rated_load_kg > 0 AND rated_load_kg <= 10000),
    floors               smallint NOT NULL CHECK (floors >= 2),
    installed_on         date,
    maintenance_company  text,
    maintenance_contact  text,
    last_maintenance_on  date,
    last_inspection_on   date,
    has_terminal         boolean NOT NULL DEFAULT false,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX elevator_district_idx ON elevator (district);

-- Registration codes are digits: the "C" collation compares them bytewise, which keeps
-- the primary-key B-trees of the big tables cheap to maintain at ingest.

-- Raw samples, one row per sample, as the contract (tianyan/contract.py) defines them.
-- The primary key is the natural key: a replay or a restart writes nothing twice.
CREATE TABLE telemetry_sample (
    time                 timestamptz NOT NULL,
    elevator_id          char(20) COLLATE "C" NOT NULL,
    seq                  bigint NOT NULL,
    speed_mps            real NOT NULL,
    accel_mps2           real NOT NULL,
    position_m           real NOT NULL,
    floor                smallint NOT NULL,
    direction            smallint NOT NULL,
    load_kg              real NOT NULL,
    door                 smallint NOT NULL,
    door_zone            boolean NOT NULL,
    leveling_offset_mm   real NOT NULL,
    passengers           boolean NOT NULL,
    alarm                boolean NOT NULL,
    service_mode         smallint NOT NULL,
    PRIMARY KEY (elevator_id, time)
);
-- The primary key serves per-elevator queries. Time-range scans across the fleet (replay,
-- evidence) get chunk exclusion plus a BRIN index, which costs next to nothing at ingest
-- because samples arrive nearly in time order; a B-tree on time would double index upkeep.
SELECT create_hypertable('telemetry_sample', by_range('time', INTERVAL '15 minutes'),
                         create_default_indexes => false);
CREATE INDEX telemetry_sample_time_brin ON telemetry_sample USING brin (time);

-- The sample columns of one message as arrays: the sink turns a message's JSON into this
-- with jsonb_populate_record and unnests it into rows.
CREATE TYPE sample_columns AS (
    t_ms bigint[], speed_mps real[], accel_mps2 real[], position_m real[], floor smallint[],
    direction smallint[], load_kg real[], door smallint[], door_zone boolean[],
    leveling_offset_mm real[], passengers boolean[], alarm boolean[], service_mode smallint[]
);

-- GB/T 24476 fault and event codes as terminals raise them.
CREATE TABLE telemetry_code (
    time         timestamptz NOT NULL,
    elevator_id  char(20) COLLATE "C" NOT NULL,
    code         char(2) NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('fault', 'event')),
    seq          bigint NOT NULL,
    PRIMARY KEY (elevator_id, time, code)
);
SELECT create_hypertable('telemetry_code', by_range('time', INTERVAL '7 days'),
                         create_default_indexes => false);

-- Tumbling-window features per elevator (width 1 s or 60 s).
CREATE TABLE window_feature (
    bucket_start          timestamptz NOT NULL,
    elevator_id           char(20) COLLATE "C" NOT NULL,
    width_s               smallint NOT NULL CHECK (width_s IN (1, 60)),
    samples               integer NOT NULL,
    speed_max_mps         real,
    speed_mean_mps        real,
    accel_peak_mps2       real,
    jerk_peak_mps3        real,
    load_max_kg           real,
    moving_s              real,
    occupied_s            real,
    door_open_count       integer,
    door_close_count      integer,
    door_opening_s        real,
    door_closing_s        real,
    door_open_s           real,
    leveling_offset_mm    real,
    PRIMARY KEY (elevator_id, width_s, bucket_start)
);
SELECT create_hypertable('window_feature', by_range('bucket_start', INTERVAL '6 hours'),
                         create_default_indexes => false);

-- Trips: one row per run from standstill to standstill.
CREATE TABLE trip (
    start_time            timestamptz NOT NULL,
    elevator_id           char(20) COLLATE "C" NOT NULL,
    end_time              timestamptz NOT NULL,
    start_floor           smallint NOT NULL,
    end_floor             smallint NOT NULL,
    direction             smallint NOT NULL,
    duration_s            real NOT NULL,
    distance_m            real NOT NULL,
    peak_speed_mps        real NOT NULL,
    peak_accel_mps2       real NOT NULL,
    peak_jerk_mps3        real,
    load_kg               real,
    leveling_offset_mm    real,
    door_opening_s        real,
    door_closing_s        real,
    PRIMARY KEY (elevator_id, start_time)
);
SELECT create_hypertable('trip', by_range('start_time', INTERVAL '7 days'),
                         create_default_indexes => false);
CREATE INDEX trip_start_time_idx ON trip (start_time DESC);

-- Alerts as detectors raise them. alert_key is the detector's natural key, so a replay
-- raises nothing twice.
CREATE TABLE alert (
    alert_id            uuid PRIMARY KEY,
    alert_key           text NOT NULL UNIQUE,
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
    suggested_handling  text
);
CREATE INDEX alert_elevator_time_idx ON alert (elevator_id, raised_at DESC);

-- Incidents and their lifecycle.
CREATE TABLE incident (
    incident_id         uuid PRIMARY KEY,
    elevator_id         char(20) COLLATE "C" NOT NULL,
    fault_type          text NOT NULL,
    gb_code             char(2),
    severity            text NOT NULL,
    state               text NOT NULL CHECK (state IN
                          ('open', 'acknowledged', 'arrived', 'resolved', 'false_alarm')),
    escalation_level    text NOT NULL DEFAULT 'enterprise' CHECK (escalation_level IN
                          ('enterprise', 'street', 'district', 'city')),
    estimated_trapped   smallint,
    opened_at           timestamptz NOT NULL,
    acknowledged_at     timestamptz,
    arrived_at          timestamptz,
    closed_at           timestamptz,
    updated_at          timestamptz NOT NULL,
    details             jsonb NOT NULL DEFAULT '{}'
);
-- One open incident per elevator and fault type: repeats update it.
CREATE UNIQUE INDEX incident_one_open_idx ON incident (elevator_id, fault_type)
    WHERE state IN ('open', 'acknowledged', 'arrived');
CREATE INDEX incident_opened_idx ON incident (opened_at DESC);

CREATE TABLE incident_event (
    event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incident,
    time         timestamptz NOT NULL,
    event_type   text NOT NULL,
    from_state   text,
    to_state     text NOT NULL,
    actor        text NOT NULL,
    note         text
);
CREATE INDEX incident_event_incident_idx ON incident_event (incident_id, time);

-- Samples around each incident, kept with it after raw retention drops the originals.
CREATE TABLE evidence_sample (LIKE telemetry_sample INCLUDING DEFAULTS,
    incident_id uuid NOT NULL,
    PRIMARY KEY (incident_id, elevator_id, time));
SELECT create_hypertable('evidence_sample', by_range('time', INTERVAL '7 days'),
                         create_default_indexes => false);

-- The rescue-webhook outbox: one row per (incident change, endpoint).
CREATE TABLE webhook_delivery (
    delivery_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id        text NOT NULL,
    endpoint          text NOT NULL,
    incident_id       uuid NOT NULL REFERENCES incident,
    event_type        text NOT NULL,
    payload           jsonb NOT NULL,
    created_at        timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    last_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    delivered_at      timestamptz,
    UNIQUE (webhook_id, endpoint)
);
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (next_attempt_at) WHERE status = 'pending';

-- Risk grades with their history and the factors behind each.
CREATE TABLE risk_grade (
    elevator_id   char(20) COLLATE "C" NOT NULL,
    graded_at     timestamptz NOT NULL,
    score         real NOT NULL CHECK (score >= 0 AND score <= 100),
    grade         text NOT NULL CHECK (grade IN ('red', 'orange', 'yellow', 'blue')),
    factors       jsonb NOT NULL,
    PRIMARY KEY (elevator_id, graded_at)
);
CREATE INDEX risk_grade_graded_idx ON risk_grade (graded_at DESC);

-- The tamper-evident ledger: each entry carries the hash of the one before.
CREATE TABLE audit_ledger (
    entry_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    entry_type    text NOT NULL,
    entity_id     text NOT NULL,
    payload       jsonb NOT NULL,
    prev_hash     bytea NOT NULL,
    entry_hash    bytea NOT NULL UNIQUE
);
