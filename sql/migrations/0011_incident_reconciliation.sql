-- 0011 routing, escalation and reconciliation of incidents (issue 16, parts 1-3).

-- GET /incidents pages through incidents by when they last changed (keyset on
-- (updated_at, incident_id)): after an outage the rescue platform asks for everything
-- changed since its last good sight.
-- An incident's route (rescue | maintenance), the wall-clock time it was reopened and when
-- its arrival became overdue live in incident.details: new columns would change every
-- existing incident's ledgered content digest (audit_fact_digests hashes the whole row).
CREATE INDEX incident_updated_idx ON incident (updated_at, incident_id);

-- A raised alert with no active incident looks up the latest incident of its elevator and
-- type (reopened when it was resolved while its condition still held): by this index, not
-- by a scan of every incident, whatever the table's size.
CREATE INDEX incident_elevator_fault_idx ON incident (elevator_id, fault_type, opened_at DESC);
