-- Outbox rows name the secret they are to be signed with (issue 11): a dispatcher claims only
-- the rows of its own endpoints and secret, so a stale process of an earlier run — started
-- with another secret — cannot claim a row, sign it with the wrong key and have the
-- receiver refuse it into the dead letters. NULL (rows queued before this migration) may be
-- claimed by any dispatcher of the row's endpoint.
ALTER TABLE webhook_delivery ADD COLUMN signing_key_id text;


-- Evidence copies requested by incident changes, made by the dispatcher outside the alert's
-- transaction (issue 11): a district's burst opens thousands of incidents in seconds, and
-- copying each one's raw samples inside its transaction halved the alerts applied per
-- second. A request is deleted in the transaction that makes its copy, so none is lost.
CREATE TABLE evidence_request (
    request_id    bigserial PRIMARY KEY,
    incident_id   uuid NOT NULL REFERENCES incident,
    elevator_id   char(20) COLLATE "C" NOT NULL,
    time_from     timestamptz NOT NULL,
    time_to       timestamptz NOT NULL,
    requested_at  timestamptz NOT NULL
);
