-- Functions, re-applied on every migrate (CREATE OR REPLACE).

-- Raw-sample retention without TimescaleDB's policies (Timescale License): the pipeline
-- calls this on its own schedule. drop_chunks needs the table's owner, so this runs with
-- the owner's rights and only ever drops whole telemetry_sample chunks older than the
-- retention; window features, trips and evidence are kept.
CREATE OR REPLACE FUNCTION drop_old_raw_chunks(retention_days integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = tianyan, public AS $$
DECLARE
    dropped integer;
BEGIN
    IF retention_days < 1 THEN
        RAISE EXCEPTION 'retention_days must be at least 1, got %', retention_days;
    END IF;
    SELECT count(*) INTO dropped FROM drop_chunks('tianyan.telemetry_sample',
        older_than => now() - make_interval(days => retention_days));
    RETURN dropped;
END $$;

-- Copy the raw samples around an incident to the evidence table, kept after retention
-- drops the originals. Idempotent on (incident, elevator, time).
CREATE OR REPLACE FUNCTION copy_incident_evidence(p_incident_id uuid, p_elevator_id text,
                                                  p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO evidence_sample
        SELECT s.*, p_incident_id FROM telemetry_sample s
        WHERE s.elevator_id = p_elevator_id AND s.time >= p_from AND s.time <= p_to
        ON CONFLICT DO NOTHING RETURNING 1)
    SELECT count(*)::integer FROM ins
$$;
