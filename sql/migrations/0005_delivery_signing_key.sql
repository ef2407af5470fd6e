-- Outbox rows name the secret they are to be signed with (issue 11): a dispatcher claims only
-- the rows of its own endpoints and secret, so a stale process of an earlier run — started
-- with another secret — cannot claim a row, sign it with the wrong key and have the
-- receiver refuse it into the dead letters. NULL (rows queued before this migration) may be
-- claimed by any dispatcher of the row's endpoint.
ALTER TABLE webhook_delivery ADD COLUMN signing_key_id text;

