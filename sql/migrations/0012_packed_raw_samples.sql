-- 0012 raw samples packed per elevator-minute (issue 13): a city's 7 days of raw samples.
--
-- telemetry_sample (one row per sample, 189 bytes with its key) stays where the sink writes
-- and where recent samples are read. Once a chunk of it is older than
-- TIANYAN_RAW_PACK_AFTER_MINUTES, tianyan.pack_raw_chunks rewrites it here: one row per
-- elevator-minute, each sample column an array. A row holds up to 600 samples (10 Hz), a few
-- kB, so PostgreSQL's TOAST compresses each array (lz4) — a row of one message (10 samples,
-- ≈ 600 bytes) stays under TOAST's 2 kB threshold whatever toast_tuple_target says, and is
-- never compressed (measured by `tianyan bench storage`). Once a row passes that threshold,
-- a toast_tuple_target of 128 bytes has every array compressed, not only the largest few
-- until the row fits 2 kB. Every value keeps its column type,
-- and every sample its seq: reading a minute back gives the rows it was packed from.
--
-- Chunks of 1 hour: rows arrive a chunk of telemetry_sample at a time, and retention drops
-- whole hours.
CREATE TABLE telemetry_sample_minute (
    time                 timestamptz NOT NULL,           -- the minute (time_bucket '1 minute')
    elevator_id          char(20) COLLATE "C" NOT NULL,
    seq                  bigint[] NOT NULL,
    t_offset_ms          integer[] NOT NULL,             -- each sample's ms after the minute
    speed_mps            real[] NOT NULL,
    accel_mps2           real[] NOT NULL,
    position_m           real[] NOT NULL,
    floor                smallint[] NOT NULL,
    direction            smallint[] NOT NULL,
    load_kg              real[] NOT NULL,
    door                 smallint[] NOT NULL,
    door_zone            boolean[] NOT NULL,
    leveling_offset_mm   real[] NOT NULL,
    passengers           boolean[] NOT NULL,
    alarm                boolean[] NOT NULL,
    service_mode         smallint[] NOT NULL,
    PRIMARY KEY (elevator_id, time)
) WITH (toast_tuple_target = 128);
DO $$
DECLARE c text;
BEGIN
  FOREACH c IN ARRAY ARRAY['seq', 't_offset_ms', 'speed_mps', 'accel_mps2', 'position_m', 'floor',
                           'direction', 'load_kg', 'door', 'door_zone', 'leveling_offset_mm',
                           'passengers', 'alarm', 'service_mode'] LOOP
    EXECUTE format('ALTER TABLE telemetry_sample_minute ALTER COLUMN %I SET COMPRESSION lz4', c);
  END LOOP;
END $$;
SELECT create_hypertable('telemetry_sample_minute', by_range('time', INTERVAL '1 hour'),
                         create_default_indexes => false);
CREATE INDEX telemetry_sample_minute_time_brin ON telemetry_sample_minute USING brin (time);
