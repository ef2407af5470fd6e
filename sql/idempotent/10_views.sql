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

-- Risk grading (streams/grading.py writes risk_grade; README "Risk grading and the report").
-- Grafana boards and `tianyan report` read these views; their column names are stable.

-- The grade each elevator holds now: its latest risk_grade row. risk_grade keeps history
-- compactly (a row only when an elevator's grade or score changed), so graded_at is when
-- the current grade was set, not when grading last ran.
--   elevator_id        registration code
--   district, address, building_type, latitude, longitude   from the registry
--   graded_at          time of the grading that set this grade (timestamptz)
--   score              0..100 (real)
--   grade              red | orange | yellow | blue
--   grade_zh           重大 | 较大 | 一般 | 低
--   grade_rank         1 red .. 4 blue (sorts most severe first)
--   top_factor         the factor contributing most points (NULL when none contributes)
--   top_factor_points  its points
--   weights_version    version of the weights that produced the score
--   factors            the full explanation (jsonb: {"weights_version", "window_days",
--                      "factors": {name: {"value", "points", "reason"}}})
CREATE OR REPLACE VIEW current_risk_grade AS
SELECT g.elevator_id,
       e.district,
       e.address,
       e.building_type,
       e.latitude,
       e.longitude,
       g.graded_at,
       g.score,
       g.grade,
       CASE g.grade WHEN 'red' THEN '重大' WHEN 'orange' THEN '较大'
                    WHEN 'yellow' THEN '一般' ELSE '低' END AS grade_zh,
       CASE g.grade WHEN 'red' THEN 1 WHEN 'orange' THEN 2
                    WHEN 'yellow' THEN 3 ELSE 4 END AS grade_rank,
       top.name AS top_factor,
       top.points AS top_factor_points,
       g.factors ->> 'weights_version' AS weights_version,
       g.factors
FROM (
    SELECT DISTINCT ON (elevator_id) elevator_id, graded_at, score, grade, factors
    FROM risk_grade
    ORDER BY elevator_id, graded_at DESC
) g
LEFT JOIN elevator e ON e.registration_code = g.elevator_id
LEFT JOIN LATERAL (
    SELECT f.key AS name, (f.value ->> 'points')::real AS points
    FROM jsonb_each(g.factors -> 'factors') f
    WHERE (f.value ->> 'points')::real > 0
    ORDER BY (f.value ->> 'points')::real DESC, f.key
    LIMIT 1
) top ON true;

-- Elevators per district and current grade (the regulators' heatmap).
--   district, red, orange, yellow, blue, graded (sum of the four), ungraded (no grade yet)
CREATE OR REPLACE VIEW district_risk_grade AS
SELECT e.district,
       count(*) FILTER (WHERE c.grade = 'red') AS red,
       count(*) FILTER (WHERE c.grade = 'orange') AS orange,
       count(*) FILTER (WHERE c.grade = 'yellow') AS yellow,
       count(*) FILTER (WHERE c.grade = 'blue') AS blue,
       count(c.grade) AS graded,
       count(*) FILTER (WHERE c.grade IS NULL) AS ungraded
FROM elevator e
LEFT JOIN current_risk_grade c ON c.elevator_id = e.registration_code
GROUP BY e.district;

-- Terminal coverage per district against the Lianyungang plan's targets (MISSION.md):
-- at least 30 % of the elevators in every district, and at least 90 % of the residential
-- elevators managed by property companies. Shares are fractions 0..1 (NULL when there is
-- nothing to divide by); the targets are columns so that boards and reports show them.
-- Beside the terminals the registry declares (has_terminal), those that actually reported
-- in the last 24 hours before now: elevators with a 1-minute window (window_feature,
-- width 60 s) in that time. Every message the worker takes, an idle terminal's 30-s
-- heartbeat included, lands in one; each elevator is one probe of the window table's key
-- (elevator, width, minute), so the figure stays cheap at the city's size.
--   district
--   elevators, with_terminal, terminal_share, terminal_target_share (0.30),
--   terminal_target_met
--   managed_residential (building_type residential AND property_managed),
--   managed_residential_with_terminal, managed_residential_share,
--   managed_residential_target_share (0.90), managed_residential_target_met
--   (NULL when the district has no managed residential elevators)
--   reporting_24h               elevators that reported in the last 24 h (declared or not)
--   reporting_24h_share         reporting_24h / elevators
--   declared_silent_24h         declared with a terminal, but silent for 24 h
--   reporting_undeclared_24h    reported in the last 24 h, not declared with a terminal
CREATE OR REPLACE VIEW district_coverage AS
WITH counts AS (
    SELECT e.district,
           count(*) AS elevators,
           count(*) FILTER (WHERE e.has_terminal) AS with_terminal,
           count(*) FILTER (WHERE e.building_type = 'residential' AND e.property_managed)
               AS managed_residential,
           count(*) FILTER (WHERE e.building_type = 'residential' AND e.property_managed
                            AND e.has_terminal) AS managed_residential_with_terminal,
           count(*) FILTER (WHERE r.reported) AS reporting_24h,
           count(*) FILTER (WHERE e.has_terminal AND r.reported IS NULL)
               AS declared_silent_24h,
           count(*) FILTER (WHERE NOT e.has_terminal AND r.reported) AS reporting_undeclared_24h
    FROM elevator e
    LEFT JOIN LATERAL (
        SELECT true AS reported FROM window_feature w
         WHERE w.elevator_id = e.registration_code AND w.width_s = 60
           AND w.bucket_start > now() - interval '24 hours'
         LIMIT 1
    ) r ON true
    GROUP BY e.district
)
SELECT district,
       elevators,
       with_terminal,
       with_terminal::double precision / elevators AS terminal_share,
       0.30::double precision AS terminal_target_share,
       with_terminal::double precision / elevators >= 0.30 AS terminal_target_met,
       managed_residential,
       managed_residential_with_terminal,
       managed_residential_with_terminal::double precision / nullif(managed_residential, 0)
           AS managed_residential_share,
       0.90::double precision AS managed_residential_target_share,
       managed_residential_with_terminal::double precision / nullif(managed_residential, 0)
           >= 0.90 AS managed_residential_target_met,
       reporting_24h,
       reporting_24h::double precision / elevators AS reporting_24h_share,
       declared_silent_24h,
       reporting_undeclared_24h
FROM counts;

-- The same for the whole city, with the plan's unit target: at least 3,500 elevators
-- connected to the "Sky Eye" network.
--   elevators, with_terminal, terminal_share, units_target (3500), units_target_met,
--   managed_residential, managed_residential_with_terminal, managed_residential_share,
--   managed_residential_target_share (0.90), managed_residential_target_met,
--   districts, districts_meeting_terminal_target,
--   reporting_24h, reporting_24h_share, declared_silent_24h, reporting_undeclared_24h
CREATE OR REPLACE VIEW city_coverage AS
SELECT sum(elevators)::bigint AS elevators,
       sum(with_terminal)::bigint AS with_terminal,
       sum(with_terminal)::double precision / nullif(sum(elevators), 0) AS terminal_share,
       3500::bigint AS units_target,
       coalesce(sum(with_terminal), 0) >= 3500 AS units_target_met,
       sum(managed_residential)::bigint AS managed_residential,
       sum(managed_residential_with_terminal)::bigint AS managed_residential_with_terminal,
       sum(managed_residential_with_terminal)::double precision
           / nullif(sum(managed_residential), 0) AS managed_residential_share,
       0.90::double precision AS managed_residential_target_share,
       sum(managed_residential_with_terminal)::double precision
           / nullif(sum(managed_residential), 0) >= 0.90 AS managed_residential_target_met,
       count(*) AS districts,
       count(*) FILTER (WHERE terminal_target_met) AS districts_meeting_terminal_target,
       sum(reporting_24h)::bigint AS reporting_24h,
       sum(reporting_24h)::double precision / nullif(sum(elevators), 0) AS reporting_24h_share,
       sum(declared_silent_24h)::bigint AS declared_silent_24h,
       sum(reporting_undeclared_24h)::bigint AS reporting_undeclared_24h
FROM district_coverage;

-- Every raw sample still kept, one row per sample: the recent ones (telemetry_sample, where
-- the sink writes) and the packed ones (telemetry_sample_minute, migration 0012, unnested).
-- stored_time is the time of the row the sample is stored in: the sample's own time, or
-- its minute. A query for a time range must also bound stored_time, which the planner can
-- push into both tables (their keys, chunk exclusion); a bound on time alone cannot reach
-- the packed rows, and would read all of them:
--     WHERE time BETWEEN $from AND $to
--       AND stored_time > $from - interval '1 minute' AND stored_time <= $to
-- A sample stored again after its minute was packed (a replay of old history) shows twice
-- until the next pack_raw_chunks merges it (keeping the first).
-- Created only once 0012 has run (a database migrated part-way has no packed table).
DO $do$ BEGIN
  IF to_regclass('tianyan.telemetry_sample_minute') IS NOT NULL THEN
    CREATE OR REPLACE VIEW raw_sample AS
    SELECT s.time, s.elevator_id, s.seq, s.speed_mps, s.accel_mps2, s.position_m, s.floor,
           s.direction, s.load_kg, s.door, s.door_zone, s.leveling_offset_mm, s.passengers,
           s.alarm, s.service_mode, s.time AS stored_time
      FROM telemetry_sample s
    UNION ALL
    SELECT m.time + u.t_offset_ms * interval '1 millisecond', m.elevator_id, u.seq,
           u.speed_mps, u.accel_mps2, u.position_m, u.floor, u.direction, u.load_kg, u.door,
           u.door_zone, u.leveling_offset_mm, u.passengers, u.alarm, u.service_mode,
           m.time AS stored_time
      FROM telemetry_sample_minute m,
           unnest(m.seq, m.t_offset_ms, m.speed_mps, m.accel_mps2, m.position_m, m.floor,
                  m.direction, m.load_kg, m.door, m.door_zone, m.leveling_offset_mm,
                  m.passengers, m.alarm, m.service_mode)
             AS u(seq, t_offset_ms, speed_mps, accel_mps2, position_m, floor, direction,
                  load_kg, door, door_zone, leveling_offset_mm, passengers, alarm, service_mode);
  END IF;
END $do$;
