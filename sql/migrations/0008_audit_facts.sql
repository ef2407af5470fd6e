-- 0008 the ledger vouches for every recorded fact (issue 15, part 5): alerts, applied
-- alerts, actions, deliveries, incidents, evidence and the registry each get a ledger entry
-- ('fact') carrying the sha256 of their content whenever they are written
-- (ledger_facts, sql/idempotent/20_functions.sql), and `audit verify` recomputes it.

-- The latest fact of an entity, found by ledger_facts (to skip an unchanged one) and by
-- `audit verify`.
CREATE INDEX audit_ledger_fact_idx ON audit_ledger (entity_id, seq DESC)
    WHERE entry_type = 'fact';

-- Rows written before this migration have no fact yet: the first migrate after it ledgers
-- them all once (ledger_backfill_facts, run at the end of sql/idempotent/20_functions.sql),
-- then deletes this row, so later runs never bless a row edited since.
CREATE TABLE audit_fact_backfill (pending boolean PRIMARY KEY CHECK (pending));
INSERT INTO audit_fact_backfill VALUES (true);
