-- Ledgers the facts written before migration 0008, on the first migrate after it; a no-op
-- on every later run (see ledger_backfill_facts in 20_functions.sql).
SELECT ledger_backfill_facts();
