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
BEGIN
    IF retention_days < 1 THEN
        RAISE EXCEPTION 'retention_days must be at least 1, got %', retention_days;
    END IF;
    SELECT count(*) INTO dropped FROM public.drop_chunks('tianyan.telemetry_sample',
        older_than => now() - make_interval(days => retention_days));
    RETURN dropped;
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
LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO evidence_sample
        SELECT s.*, p_incident_id FROM telemetry_sample s
        WHERE s.elevator_id = p_elevator_id::char(20) COLLATE "C"
          AND s.time >= p_from AND s.time <= p_to
        ON CONFLICT DO NOTHING RETURNING 1)
    SELECT count(*)::integer FROM ins
$$;

-- Append one entry to the tamper-evident ledger and return its seq.
--
-- Entries form a hash chain: seq is gapless and each entry carries the hash of the one before
-- (32 zero bytes before the first). An entry's hash is
--   sha256(prev_hash || utf8(seq | recorded_at_us | entry_type | entity_id | payload::text))
-- with '|' between the fields, recorded_at_us the recording time in Unix microseconds and
-- payload::text jsonb's canonical text. `tianyan audit verify` recomputes it independently.
-- The lock serialises appends for the rest of the calling transaction, so the head read
-- here is the head the entry follows; a rolled-back transaction leaves no gap.
CREATE OR REPLACE FUNCTION ledger_append(p_entry_type text, p_entity_id text, p_payload jsonb)
RETURNS bigint
LANGUAGE plpgsql SET search_path = tianyan, public AS $$
DECLARE
    head_seq  bigint;
    head_hash bytea;
    at        timestamptz := date_trunc('microseconds', clock_timestamp());
    hash      bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('tianyan.audit_ledger'));
    SELECT seq, entry_hash INTO head_seq, head_hash
      FROM audit_ledger ORDER BY seq DESC LIMIT 1;
    IF head_seq IS NULL THEN
        head_seq := 0;
        head_hash := decode(repeat('00', 32), 'hex');
    END IF;
    hash := sha256(head_hash || convert_to(concat_ws('|', head_seq + 1,
                (extract(epoch FROM at) * 1000000)::bigint, p_entry_type, p_entity_id,
                p_payload::text), 'UTF8'));
    INSERT INTO audit_ledger (seq, recorded_at, entry_type, entity_id, payload, prev_hash, entry_hash)
    VALUES (head_seq + 1, at, p_entry_type, p_entity_id, p_payload, head_hash, hash);
    RETURN head_seq + 1;
END $$;
