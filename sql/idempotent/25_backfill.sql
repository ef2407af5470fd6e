-- The one way a backfill removes alerts (`tianyan backfill`, migration 0016): alerts are
-- facts the ledger vouches for, and no application role may DELETE them. This function, run
-- with its owner's rights, removes the named alerts of one elevator (and the dispatcher's
-- record of having applied one, when it opened or changed no incident), and appends the
-- slice's ledger entry in the same transaction: entry_type 'backfill', entity_id
-- 'backfill/<run>/<elevator>', payload = p_slice plus 'removed': each removed fact's table,
-- key and last digest. `audit verify` accepts a ledgered fact that is gone only when such an
-- entry, later than the fact's last entry, names it with that digest; any other deletion is
-- still tampering. An alert an incident holds is refused: a backfill never changes incidents.
-- Returns the entry's seq. Called once per slice, an empty p_alert_ids included.
CREATE OR REPLACE FUNCTION backfill_remove_alerts(p_run_id uuid, p_elevator_id text,
                                                  p_alert_ids uuid[], p_slice jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    removed jsonb;
    foreign_id uuid;
BEGIN
    IF NOT EXISTS (SELECT FROM tianyan.backfill_run r WHERE r.backfill_run_id = p_run_id) THEN
        RAISE EXCEPTION 'backfill run % is not recorded in backfill_run', p_run_id;
    END IF;
    SELECT a.alert_id INTO foreign_id FROM tianyan.alert a
     WHERE a.alert_id = ANY(p_alert_ids) AND a.elevator_id <> p_elevator_id::char(20) LIMIT 1;
    IF foreign_id IS NOT NULL THEN
        RAISE EXCEPTION 'alert % is not of elevator %: a slice removes only its own',
            foreign_id, p_elevator_id;
    END IF;
    SELECT ia.alert_id INTO foreign_id FROM tianyan.incident_alert ia
     WHERE ia.alert_id = ANY(p_alert_ids) AND ia.incident_id IS NOT NULL LIMIT 1;
    IF foreign_id IS NOT NULL THEN
        RAISE EXCEPTION 'alert % belongs to an incident: a backfill never changes incidents',
            foreign_id;
    END IF;
    -- under the ledger's lock, the digests read here are the facts' last
    PERFORM pg_advisory_xact_lock(hashtext('tianyan.audit_ledger'));
    SELECT coalesce(jsonb_agg(jsonb_build_object('table', t.name, 'key', d.fact_key,
                                                 'sha256', d.sha256)
                              ORDER BY t.name, d.fact_key), '[]'::jsonb)
      INTO removed
      FROM unnest(ARRAY['alert', 'incident_alert']) AS t(name)
     CROSS JOIN LATERAL tianyan.audit_fact_digests(t.name, p_alert_ids::text[]) d;
    DELETE FROM tianyan.incident_alert WHERE alert_id = ANY(p_alert_ids);
    DELETE FROM tianyan.alert WHERE alert_id = ANY(p_alert_ids);
    RETURN tianyan.ledger_append('backfill', 'backfill/' || p_run_id || '/' || p_elevator_id,
                                 p_slice || jsonb_build_object('removed', removed));
END $$;
