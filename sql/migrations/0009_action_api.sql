-- 0009 the acknowledgement API and the webhook sender (issue 15, parts 3, 4, 6).

-- Idempotency keys are scoped to (incident, action): a key reused for another incident or
-- action is another request; reused for the same ones with another body, it is refused
-- (422), which needs the first request's fingerprint (SHA-256 of its decoded body).
ALTER TABLE incident_action ADD COLUMN request_sha256 text;
ALTER TABLE incident_action DROP CONSTRAINT incident_action_pkey;
ALTER TABLE incident_action ADD PRIMARY KEY (incident_id, action, request_id);

-- Replay protection: the webhook-id of every signed request that verified, stored on first
-- sight whatever its answer; a second sight is refused. Ids older than the signature's
-- tolerance (5 min) can no longer verify, so the dispatcher deletes them after 10 min.
CREATE TABLE action_nonce (
    webhook_id  text PRIMARY KEY,
    seen_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX action_nonce_seen_at_idx ON action_nonce (seen_at);

-- Endpoints are stored by name, never by URL (a URL may carry a token): the redacted URL
-- scheme://host[:port]/… and the first 8 hex digits of the whole URL's SHA-256
-- (rescue.delivery.endpoint_name). Rows queued before this migration get their name.
UPDATE webhook_delivery
   SET endpoint = lower(substring(endpoint FROM '^([A-Za-z][A-Za-z0-9+.-]*)://'))
                  || '://'
                  || lower(substring(endpoint FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'))
                  || '/… ('
                  || left(encode(sha256(convert_to(endpoint, 'UTF8')), 'hex'), 8)
                  || ')'
 WHERE endpoint ~ '^[A-Za-z][A-Za-z0-9+.-]*://';
