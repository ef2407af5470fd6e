-- Privileges, re-applied on every migrate so that tables added later are covered.
--   tianyan_writer     the pipeline: reads and writes operational tables; may only append
--                      to the audit ledger, through ledger_append and ledger_facts.
--   tianyan_analyst    read-only, everything (Grafana, notebooks).
--   tianyan_regulator  read-only, everything.
--   tianyan_public     the public lookup view only.
--   tianyan_unit       (group of the user units' login roles) and
--   tianyan_maintenance (group of the maintenance companies' login roles): read-only, the
--                      per-elevator plain tables (no hypertable), under row-level security (migration 0007): each
--                      login role sees only its own unit's or company's elevators.

GRANT USAGE ON SCHEMA tianyan TO tianyan_writer, tianyan_analyst, tianyan_regulator, tianyan_public;

REVOKE ALL ON ALL TABLES IN SCHEMA tianyan FROM tianyan_writer, tianyan_analyst, tianyan_regulator, tianyan_public;

GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA tianyan TO tianyan_writer;
-- Only ledger_append (SECURITY DEFINER, run as the ledger's owner) writes the ledger: no
-- application role may write it directly, so no entry bypasses the chain's lock and hash.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_ledger
    FROM PUBLIC, tianyan_writer, tianyan_analyst, tianyan_regulator, tianyan_public;
-- Nor the once-only backfill's flag (migration 0008): setting it would ledger every row as
-- it is then, edited or not.
DO $$ BEGIN
    IF to_regclass('tianyan.audit_fact_backfill') IS NOT NULL THEN
        REVOKE ALL ON audit_fact_backfill
            FROM PUBLIC, tianyan_writer, tianyan_analyst, tianyan_regulator, tianyan_public;
    END IF;
END $$;
-- The dispatcher takes evidence requests off their queue as it makes the copies.
GRANT DELETE ON evidence_request TO tianyan_writer;
-- The acknowledgement API forgets replay ids once they are too old to verify (the table
-- comes with 0009: a database migrated to an earlier version has none yet).
DO $$
BEGIN
    IF to_regclass('tianyan.action_nonce') IS NOT NULL THEN
        GRANT DELETE ON tianyan.action_nonce TO tianyan_writer;
    END IF;
END $$;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tianyan TO tianyan_writer;

GRANT SELECT ON ALL TABLES IN SCHEMA tianyan TO tianyan_analyst, tianyan_regulator;

GRANT SELECT ON public_elevator TO tianyan_public;

-- The scoped readers: only tables with row-level security, and views that read them with
-- the reader's rights (security_invoker; a plain view would read with its owner's rights
-- and pass every row). public_elevator stays a definer view: it is the public's only way in.
-- No hypertable: their chunks copy the grants but not the policies (migration 0007). Only
-- once 0007 has run (a database migrated part-way, as a migration test does, has no scoped
-- roles yet).
DO $$ BEGIN
  IF to_regclass('tianyan.data_scope') IS NOT NULL THEN
    GRANT USAGE ON SCHEMA tianyan TO tianyan_unit, tianyan_maintenance;
    REVOKE ALL ON ALL TABLES IN SCHEMA tianyan FROM tianyan_unit, tianyan_maintenance;
    GRANT SELECT ON elevator, alert, incident, incident_event, risk_grade, data_scope
        TO tianyan_unit, tianyan_maintenance;
    IF to_regclass('tianyan.maintenance_session') IS NOT NULL THEN  -- from 0010
        GRANT SELECT ON maintenance_session TO tianyan_unit, tianyan_maintenance;
    END IF;
    ALTER VIEW current_risk_grade SET (security_invoker = true);
    GRANT SELECT ON current_risk_grade TO tianyan_unit, tianyan_maintenance;
    -- a definer view that filters by the reader itself (15_scoped_views.sql)
    GRANT SELECT ON service_mode_sample TO tianyan_unit, tianyan_maintenance;
  END IF;
END $$;

REVOKE ALL ON FUNCTION drop_old_raw_chunks(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_old_raw_chunks(integer) TO tianyan_writer;
REVOKE ALL ON FUNCTION pack_raw_chunks(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pack_raw_chunks(integer) TO tianyan_writer;

REVOKE ALL ON FUNCTION ledger_append(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_append(text, text, jsonb) TO tianyan_writer;
REVOKE ALL ON FUNCTION ledger_append_many(text[], text[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_append_many(text[], text[], jsonb[]) TO tianyan_writer;
REVOKE ALL ON FUNCTION ledger_facts(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_facts(text, text[]) TO tianyan_writer;
REVOKE ALL ON FUNCTION ledger_backfill_facts() FROM PUBLIC;

-- `tianyan backfill` (migration 0016) replaces windows and trips, which are not ledgered
-- facts; it removes alerts only through backfill_remove_alerts, which ledgers them.
GRANT DELETE ON window_feature, trip TO tianyan_writer;
REVOKE ALL ON FUNCTION backfill_remove_alerts(uuid, text, uuid[], jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION backfill_remove_alerts(uuid, text, uuid[], jsonb) TO tianyan_writer;
