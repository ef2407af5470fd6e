-- Functions, re-applied on every migrate (CREATE OR REPLACE).

-- Raw-sample retention without TimescaleDB's policies (Timescale License): the pipeline
-- calls this on its own schedule. drop_chunks needs the table's owner, so this runs with
-- the owner's rights and only ever drops whole telemetry_sample chunks older than the
-- retention; window features, trips and evidence are kept.
--
-- Every SECURITY DEFINER function pins its search_path to trusted schemas with pg_temp
-- last (issue 15): otherwise a caller's temporary objects would be found first and run
-- with the owner's rights. tests/test_pg_security.py checks all of them in pg_proc.
CREATE OR REPLACE FUNCTION drop_old_raw_chunks(retention_days integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tianyan, public, pg_temp AS $$
DECLARE
    dropped integer;
    packed integer := 0;
BEGIN
    IF retention_days < 1 THEN
        RAISE EXCEPTION 'retention_days must be at least 1, got %', retention_days;
    END IF;
    SELECT count(*) INTO dropped FROM public.drop_chunks('tianyan.telemetry_sample',
        older_than => now() - make_interval(days => retention_days));
    IF to_regclass('tianyan.telemetry_sample_minute') IS NOT NULL THEN
        SELECT count(*) INTO packed FROM public.drop_chunks('tianyan.telemetry_sample_minute',
            older_than => now() - make_interval(days => retention_days));
    END IF;
    RETURN dropped + packed;
END $$;

-- Pack every telemetry_sample chunk that ended more than pack_after_minutes ago into
-- telemetry_sample_minute (migration 0012: one row per elevator-minute, lz4-compressed
-- arrays, ≈ 7× fewer bytes per sample) and drop it; returns the chunks packed. The chunk is
-- locked against writes first, so no sample lands in it between reading and dropping. A
-- minute already packed (a late sample or a replay stored after its chunk was packed) is
-- unpacked and merged, the sample stored first kept for a repeated (elevator, time), as the
-- sink's ON CONFLICT DO NOTHING keeps it. The pipeline calls it hourly with retention.
CREATE OR REPLACE FUNCTION pack_raw_chunks(pack_after_minutes integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tianyan, public, pg_temp AS $$
DECLARE
    c record;
    packed integer := 0;
BEGIN
    IF pack_after_minutes < 1 THEN
        RAISE EXCEPTION 'pack_after_minutes must be at least 1, got %', pack_after_minutes;
    END IF;
    FOR c IN
        SELECT format('%I.%I', chunk_schema, chunk_name) AS chunk, range_start, range_end
          FROM timescaledb_information.chunks
         WHERE hypertable_schema = 'tianyan' AND hypertable_name = 'telemetry_sample'
           AND range_end <= now() - make_interval(mins => pack_after_minutes)
         ORDER BY range_start
    LOOP
        EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', c.chunk);
        -- The sort of DISTINCT ON reads every earlier row (and so deletes it) before the
        -- first new row is inserted.
        EXECUTE format($sql$
            WITH earlier AS (
                DELETE FROM tianyan.telemetry_sample_minute m
                 WHERE m.time >= $1 AND m.time < $2
                RETURNING m.*),
            sample AS (
                SELECT DISTINCT ON (a.elevator_id, a.time) a.*
                  FROM (SELECT 0 AS stored, m.time + u.t_offset_ms * interval '1 millisecond'
                               AS time, m.elevator_id, u.seq, u.speed_mps, u.accel_mps2,
                               u.position_m, u.floor, u.direction, u.load_kg, u.door,
                               u.door_zone, u.leveling_offset_mm, u.passengers, u.alarm,
                               u.service_mode
                          FROM earlier m,
                               unnest(m.seq, m.t_offset_ms, m.speed_mps, m.accel_mps2,
                                      m.position_m, m.floor, m.direction, m.load_kg, m.door,
                                      m.door_zone, m.leveling_offset_mm, m.passengers,
                                      m.alarm, m.service_mode)
                                 AS u(seq, t_offset_ms, speed_mps, accel_mps2, position_m,
                                      floor, direction, load_kg, door, door_zone,
                                      leveling_offset_mm, passengers, alarm, service_mode)
                        UNION ALL
                        SELECT 1, s.time, s.elevator_id, s.seq, s.speed_mps, s.accel_mps2,
                               s.position_m, s.floor, s.direction, s.load_kg, s.door,
                               s.door_zone, s.leveling_offset_mm, s.passengers, s.alarm,
                               s.service_mode
                          FROM %s s) a
                 ORDER BY a.elevator_id, a.time, a.stored)
            INSERT INTO tianyan.telemetry_sample_minute
            SELECT public.time_bucket('1 minute', time), elevator_id,
                   array_agg(seq ORDER BY time),
                   array_agg((extract(epoch FROM time - public.time_bucket('1 minute', time))
                              * 1000)::integer ORDER BY time),
                   array_agg(speed_mps ORDER BY time), array_agg(accel_mps2 ORDER BY time),
                   array_agg(position_m ORDER BY time), array_agg(floor ORDER BY time),
                   array_agg(direction ORDER BY time), array_agg(load_kg ORDER BY time),
                   array_agg(door ORDER BY time), array_agg(door_zone ORDER BY time),
                   array_agg(leveling_offset_mm ORDER BY time),
                   array_agg(passengers ORDER BY time), array_agg(alarm ORDER BY time),
                   array_agg(service_mode ORDER BY time)
              FROM sample GROUP BY 1, 2
            $sql$, c.chunk) USING c.range_start, c.range_end;
        PERFORM public.drop_chunks('tianyan.telemetry_sample',
                                   older_than => c.range_end, newer_than => c.range_start);
        packed := packed + 1;
    END LOOP;
    RETURN packed;
END $$;

-- Copy the raw samples around an incident to the evidence table, kept after retention
-- drops the originals. Idempotent on (incident, elevator, time).
--
-- The id is compared as the column's own type and collation (char(20) COLLATE "C"): a text
-- parameter compared with a char(n) column cannot use the primary key (elevator_id, time),
-- and every call then read the whole raw table (436 ms on 0.7 M samples, issue 11). With
-- the key it reads one elevator's few minutes of samples, in the chunks the range touches,
-- whatever the size of the table.
CREATE OR REPLACE FUNCTION copy_incident_evidence(p_incident_id uuid, p_elevator_id text,
                                                  p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    copied integer;
BEGIN
    -- Recent samples and packed ones (raw_sample, 10_views.sql); stored_time bounds the
    -- packed minutes read (their key), time the samples kept.
    INSERT INTO evidence_sample
    SELECT s.time, s.elevator_id, s.seq, s.speed_mps, s.accel_mps2, s.position_m, s.floor,
           s.direction, s.load_kg, s.door, s.door_zone, s.leveling_offset_mm, s.passengers,
           s.alarm, s.service_mode, p_incident_id
      FROM raw_sample s
     WHERE s.elevator_id = p_elevator_id::char(20) COLLATE "C"
       AND s.stored_time > p_from - interval '1 minute' AND s.stored_time <= p_to
       AND s.time >= p_from AND s.time <= p_to
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS copied = ROW_COUNT;
    RETURN copied;
END $$;

-- Append one entry to the tamper-evident ledger and return its seq: the only way an entry
-- is written (no application role may INSERT, UPDATE, DELETE or TRUNCATE audit_ledger, see
-- 90_grants.sql); it runs with its owner's rights, on a search_path nobody else can plant
-- objects in (every name below is schema-qualified).
--
-- Entries form a hash chain: seq is gapless and each entry carries the hash of the one before
-- (32 zero bytes before the first). An entry's hash is
--   sha256(prev_hash || utf8(seq | recorded_at_us | entry_type | entity_id | payload::text))
-- with '|' between the fields, recorded_at_us the recording time in Unix microseconds and
-- payload::text jsonb's canonical text. `tianyan audit verify` recomputes it independently.
-- The lock serialises appends for the rest of the calling transaction, so the head read
-- here is the head the entry follows; a rolled-back transaction leaves no gap.
-- ledger_append_many appends several entries in order (one head read, one time); returns
-- the last seq.
CREATE OR REPLACE FUNCTION ledger_append_many(p_entry_types text[], p_entity_ids text[],
                                              p_payloads jsonb[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    head_seq  bigint;
    head_hash bytea;
    at        timestamptz := date_trunc('microseconds', clock_timestamp());
    hash      bytea;
    i         integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('tianyan.audit_ledger'));
    SELECT seq, entry_hash INTO head_seq, head_hash
      FROM tianyan.audit_ledger ORDER BY seq DESC LIMIT 1;
    IF head_seq IS NULL THEN
        head_seq := 0;
        head_hash := decode(repeat('00', 32), 'hex');
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_entry_types), 0) LOOP
        head_seq := head_seq + 1;
        hash := sha256(head_hash || convert_to(concat_ws('|', head_seq,
                    (extract(epoch FROM at) * 1000000)::bigint, p_entry_types[i],
                    p_entity_ids[i], p_payloads[i]::text), 'UTF8'));
        INSERT INTO tianyan.audit_ledger (seq, recorded_at, entry_type, entity_id, payload,
                                          prev_hash, entry_hash)
        VALUES (head_seq, at, p_entry_types[i], p_entity_ids[i], p_payloads[i], head_hash,
                hash);
        head_hash := hash;
    END LOOP;
    RETURN head_seq;
END $$;

CREATE OR REPLACE FUNCTION ledger_append(p_entry_type text, p_entity_id text, p_payload jsonb)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT tianyan.ledger_append_many(ARRAY[p_entry_type], ARRAY[p_entity_id],
                                      ARRAY[p_payload])
$$;

-- The recorded facts the ledger vouches for, and the content digest of each: one fact per
-- row, keyed by its primary key, except evidence — one fact per incident, all its samples.
-- A fact's digest is sha256 of its rows' jsonb text (to_jsonb of the whole row: every
-- column), one per line in key order, computed in UTC so that the session's time zone
-- cannot change it. ledger_facts records the digests; `audit verify` recomputes them all.
--   fact_key   the key as text
--   fact_rows  rows in the fact (1, or an incident's evidence samples)
--   sha256     hex digest
CREATE OR REPLACE FUNCTION audit_fact_digests(p_table text, p_keys text[] DEFAULT NULL)
RETURNS TABLE (fact_key text, fact_rows bigint, sha256 text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp SET TimeZone = 'UTC' SET extra_float_digits = 1
AS $$
DECLARE
    key_column text;
    key_type   text;
    row_order  text;
    row_json   text;
    query      text;
BEGIN
    CASE p_table
        WHEN 'alert', 'incident_alert' THEN key_column := 'alert_id'; key_type := 'uuid';
        WHEN 'incident' THEN key_column := 'incident_id'; key_type := 'uuid';
        WHEN 'incident_action' THEN key_column := 'request_id'; key_type := 'text';
        WHEN 'webhook_delivery' THEN key_column := 'delivery_id'; key_type := 'bigint';
        WHEN 'evidence_sample' THEN key_column := 'incident_id'; key_type := 'uuid';
        WHEN 'elevator' THEN key_column := 'registration_code'; key_type := 'char(20)';
        ELSE RAISE EXCEPTION 'the ledger holds no facts of table %', p_table;
    END CASE;
    row_order := CASE p_table WHEN 'evidence_sample' THEN 'elevator_id, time'
                              ELSE quote_ident(key_column) END;
    -- Columns added to a table after its rows were first ledgered are left out of the digest
    -- while NULL, so that adding them changes no recorded fact: elevator's manufacturer and
    -- model (migration 0014; read through jsonb, so a database migrated only part-way, without
    -- them, digests the same).
    row_json := CASE p_table
        WHEN 'elevator' THEN 'to_jsonb(t) - array_remove(ARRAY['
            'CASE WHEN to_jsonb(t) ->> ''manufacturer'' IS NULL THEN ''manufacturer'' END, '
            'CASE WHEN to_jsonb(t) ->> ''model'' IS NULL THEN ''model'' END], NULL)'
        ELSE 'to_jsonb(t)' END;
    query := format(
        'SELECT t.%1$I::text, count(*), encode(sha256(convert_to(string_agg((%4$s)::text,'
        ' E''\n'' ORDER BY %2$s), ''UTF8'')), ''hex'') FROM tianyan.%3$I t',
        key_column, row_order, p_table, row_json);
    IF p_keys IS NOT NULL THEN
        query := query || format(' WHERE t.%I = ANY($1::%s[])', key_column, key_type);
    END IF;
    RETURN QUERY EXECUTE query || ' GROUP BY 1' USING p_keys;
END $$;

-- Ledger the current content of the named facts of one table (their keys as text): one
-- 'fact' entry each, {table, key, rows, sha256}, entity_id '<table>/<key>' — unless its last
-- fact already has that digest, so a caller may name a fact it did not change. Called at
-- the end of every transaction that writes such a fact, after its other ledger entries.
-- Returns the entries appended.
CREATE OR REPLACE FUNCTION ledger_facts(p_table text, p_keys text[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    ids      text[];
    payloads jsonb[];
BEGIN
    IF p_keys IS NULL OR cardinality(p_keys) = 0 THEN
        RETURN 0;
    END IF;
    -- under the ledger's lock, the last fact read here is the last there is
    PERFORM pg_advisory_xact_lock(hashtext('tianyan.audit_ledger'));
    SELECT array_agg(p_table || '/' || d.fact_key ORDER BY d.fact_key),
           array_agg(jsonb_build_object('table', p_table, 'key', d.fact_key,
                                        'rows', d.fact_rows, 'sha256', d.sha256)
                     ORDER BY d.fact_key)
      INTO ids, payloads
      FROM tianyan.audit_fact_digests(p_table, p_keys) d
      LEFT JOIN LATERAL (
          SELECT l.payload ->> 'sha256' AS sha256 FROM tianyan.audit_ledger l
           WHERE l.entry_type = 'fact' AND l.entity_id = p_table || '/' || d.fact_key
           ORDER BY l.seq DESC LIMIT 1) last ON true
     WHERE last.sha256 IS DISTINCT FROM d.sha256;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM tianyan.ledger_append_many(array_fill('fact'::text, ARRAY[cardinality(ids)]),
                                       ids, payloads);
    RETURN cardinality(ids);
END $$;

-- Once, after migration 0008: ledger every fact written before it (the rows had none).
CREATE OR REPLACE FUNCTION ledger_backfill_facts()
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    t        text;
    appended integer := 0;
BEGIN
    IF to_regclass('tianyan.audit_fact_backfill') IS NULL THEN  -- before migration 0008
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT FROM tianyan.audit_fact_backfill) THEN
        RETURN 0;
    END IF;
    FOREACH t IN ARRAY ARRAY['elevator', 'alert', 'incident', 'incident_alert',
                             'incident_action', 'webhook_delivery', 'evidence_sample'] LOOP
        appended := appended + tianyan.ledger_facts(t,
            ARRAY(SELECT fact_key FROM tianyan.audit_fact_digests(t)));
    END LOOP;
    DELETE FROM tianyan.audit_fact_backfill;
    RETURN appended;
END $$;

-- Ledgers the facts written before migration 0008, on the first migrate after it; a no-op
-- on every later run.
SELECT ledger_backfill_facts();
