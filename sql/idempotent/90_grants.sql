-- Privileges, re-applied on every migrate so that tables added later are covered.
--   tianyan_writer     the pipeline: reads and writes operational tables; may only append
--                      to the audit ledger, through ledger_append and ledger_facts.
--   tianyan_analyst    read-only, everything (Grafana, notebooks).
--   tianyan_regulator  read-only, everything.
--   tianyan_public     the public lookup view only.

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
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tianyan TO tianyan_writer;

GRANT SELECT ON ALL TABLES IN SCHEMA tianyan TO tianyan_analyst, tianyan_regulator;

GRANT SELECT ON public_elevator TO tianyan_public;

REVOKE ALL ON FUNCTION drop_old_raw_chunks(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_old_raw_chunks(integer) TO tianyan_writer;

REVOKE ALL ON FUNCTION ledger_append(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_append(text, text, jsonb) TO tianyan_writer;
REVOKE ALL ON FUNCTION ledger_append_many(text[], text[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_append_many(text[], text[], jsonb[]) TO tianyan_writer;
REVOKE ALL ON FUNCTION ledger_facts(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_facts(text, text[]) TO tianyan_writer;
REVOKE ALL ON FUNCTION ledger_backfill_facts() FROM PUBLIC;
