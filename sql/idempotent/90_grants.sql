-- Privileges, re-applied on every migrate so that tables added later are covered.
--   tianyan_writer     the pipeline: reads and writes operational tables; may only append
--                      to the audit ledger.
--   tianyan_analyst    read-only, everything (Grafana, notebooks).
--   tianyan_regulator  read-only, everything.
--   tianyan_public     the public lookup view only.

GRANT USAGE ON SCHEMA tianyan TO tianyan_writer, tianyan_analyst, tianyan_regulator, tianyan_public;

REVOKE ALL ON ALL TABLES IN SCHEMA tianyan FROM tianyan_writer, tianyan_analyst, tianyan_regulator, tianyan_public;

GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA tianyan TO tianyan_writer;
REVOKE UPDATE ON audit_ledger FROM tianyan_writer;
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

REVOKE ALL ON FUNCTION drop_old_raw_chunks(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_old_raw_chunks(integer) TO tianyan_writer;

REVOKE ALL ON FUNCTION ledger_append(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_append(text, text, jsonb) TO tianyan_writer;
