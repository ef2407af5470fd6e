-- Views, re-applied on every migrate (CREATE OR REPLACE): safe to edit.

-- The public lookup of one elevator ("Sky Eye lookup"): what anyone may see, nothing of
-- the raw telemetry. The only object the tianyan_public role can read.
CREATE OR REPLACE VIEW public_elevator AS
SELECT e.registration_code,
       e.address,
       e.district,
       e.building_type,
       e.installed_on,
       e.maintenance_company,
       e.last_maintenance_on,
       e.last_inspection_on,
       e.has_terminal,
       g.grade AS risk_grade,
       g.graded_at AS risk_graded_at,
       -- Maintenance at least every 15 days (TSG T5002-2017); periodic inspection yearly.
       (e.last_maintenance_on IS NULL OR e.last_maintenance_on < current_date - 15) AS maintenance_overdue,
       (e.last_inspection_on IS NULL OR e.last_inspection_on < current_date - 365) AS inspection_overdue
FROM elevator e
LEFT JOIN LATERAL (
    SELECT grade, graded_at FROM risk_grade r
    WHERE r.elevator_id = e.registration_code
    ORDER BY graded_at DESC LIMIT 1
) g ON true;
