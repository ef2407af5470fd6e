-- 0006 one record per fact (issue 12): an alert is stored once, in `alert`, under one id —
-- uuid5 of '{alert_key}|{state}' in the namespace the worker has always used
-- (detectors.alerts.ALERT_NAMESPACE) — and the dispatcher's record of applying it,
-- `incident_alert`, references that id instead of repeating the alert's key and state.
-- The dispatcher stores an alert it applies when the worker has not (yet): whichever comes
-- first inserts the row, the other's insert is skipped.

-- uuid_generate_v5, to give the rows carried over below their id in SQL.
CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public;

-- Every stored alert under the one id (the worker always wrote it so; this makes it a fact).
UPDATE alert
   SET alert_id = public.uuid_generate_v5('5d1c8f7e-8a8e-4c55-9a49-7d3f3e0c2a11',
                                          alert_key || '|' || state)
 WHERE alert_id <> public.uuid_generate_v5('5d1c8f7e-8a8e-4c55-9a49-7d3f3e0c2a11',
                                           alert_key || '|' || state);

ALTER TABLE incident_alert RENAME TO incident_alert_0004;
ALTER TABLE incident_alert_0004 RENAME CONSTRAINT incident_alert_pkey TO incident_alert_0004_pkey;
ALTER TABLE incident_alert_0004
    RENAME CONSTRAINT incident_alert_incident_id_fkey TO incident_alert_0004_incident_id_fkey;

-- Alerts the dispatcher applied whose own row was never stored (the database refused the
-- worker's row, or something else published the alert): stored from what is known of them.
-- Elevator, type and onset come from the key ('{elevator_id}:{alert_type}:{onset_ms}'),
-- code and severity from the incident; the time it was raised is exact for the alert that
-- opened its incident (opened_at) or resolved it (closed_at), else its onset. Their
-- evidence says they were reconstructed.
INSERT INTO alert (alert_id, alert_key, state, raised_at, condition_since, elevator_id,
                   alert_type, gb_code, severity, detector, evidence)
SELECT public.uuid_generate_v5('5d1c8f7e-8a8e-4c55-9a49-7d3f3e0c2a11',
                               o.alert_key || '|' || o.state),
       o.alert_key,
       o.state,
       coalesce(CASE WHEN o.state = 'raised' AND i.alert_key = o.alert_key THEN i.opened_at
                     WHEN o.state = 'cleared' AND i.closed_by = 'detector' THEN i.closed_at
                END, k.onset, o.applied_at),
       coalesce(k.onset, i.opened_at, o.applied_at),
       coalesce(i.elevator_id, left(split_part(o.alert_key, ':', 1), 20)),
       coalesce(i.fault_type, split_part(o.alert_key, ':', 2)),
       i.gb_code,
       coalesce(i.severity, 'info'),
       'unknown',
       jsonb_build_object('reconstructed', 'migration 0006: the dispatcher applied this'
           ' alert but its own row was never stored; elevator, type and onset are from its'
           ' key, code and severity from its incident')
  FROM incident_alert_0004 o
  LEFT JOIN incident i ON i.incident_id = o.incident_id
  CROSS JOIN LATERAL (
      SELECT CASE WHEN split_part(o.alert_key, ':', 3) ~ '^[0-9]{1,15}$'
                  THEN to_timestamp(split_part(o.alert_key, ':', 3)::bigint / 1000.0)
             END AS onset) k
 WHERE NOT EXISTS (SELECT 1 FROM alert a WHERE a.alert_key = o.alert_key AND a.state = o.state);

-- Every alert the dispatcher has applied, by the alert's id: alerts are consumed at least
-- once from Kafka, and a repeat changes nothing.
CREATE TABLE incident_alert (
    alert_id     uuid PRIMARY KEY REFERENCES alert,
    incident_id  uuid REFERENCES incident,
    applied_at   timestamptz NOT NULL
);
INSERT INTO incident_alert (alert_id, incident_id, applied_at)
SELECT a.alert_id, o.incident_id, o.applied_at
  FROM incident_alert_0004 o
  JOIN alert a ON a.alert_key = o.alert_key AND a.state = o.state;

DROP TABLE incident_alert_0004;
