-- The regulators' figures (issue 16, parts 7 and 9), computed here once: the rescue and
-- supervision boards and `tianyan report` all call these functions. Re-applied on every
-- migrate (CREATE OR REPLACE). They read with the caller's rights (a scoped role sees its own
-- elevators only) and take the districts to cover (NULL: every district).

-- Rescue performance per maintenance company and per district, of the incidents opened in
-- [p_from, p_to) on the registry's elevators of p_districts. One row per company (by =
-- 'company'; an elevator with no company on record counts under '(none recorded)') and per
-- district (by = 'district'), for every group with at least one elevator.
--   by, name
--   elevators                    registered elevators in the group
--   monitored_elevators          of them, with a terminal: only those report trappings
--   trappings                    incidents of a trapping (trapped_at_level,
--                                trapped_between_levels) not closed as a false alarm
--   trappings_per_100_elevator_years   trappings per 100 monitored elevators per year of
--                                365 days, from the range's length (NULL: none monitored)
--   rescue_incidents             incidents routed to the rescue platform (details.route;
--                                incidents from before routing are all 'rescue')
--   arrivals                     of them, with an arrival on record (measured on site, or
--                                when the platform reported it)
--   arrival_p50_min, arrival_p90_min   median and 90th percentile (interpolated) of opened_at →
--                                arrived_at, minutes (NULL: no arrival)
--   on_time                      arrivals within the incident's own arrival_target_s (the
--                                plan's arrival rule, TIANYAN_ARRIVAL_TARGET_S: 30 min)
--   on_time_share                on_time / arrivals, 0..1 (NULL: no arrival)
--   incidents                    every incident, any route and state
--   false_alarms                 incidents closed as a false alarm (state false_alarm)
--   false_alarm_share            false_alarms / incidents, 0..1 (NULL: no incident)
CREATE OR REPLACE FUNCTION rescue_performance(p_from timestamptz, p_to timestamptz,
                                              p_districts text[] DEFAULT NULL)
RETURNS TABLE (by text, name text, elevators bigint, monitored_elevators bigint,
               trappings bigint, trappings_per_100_elevator_years double precision,
               rescue_incidents bigint, arrivals bigint, arrival_p50_min double precision,
               arrival_p90_min double precision, on_time bigint,
               on_time_share double precision, incidents bigint, false_alarms bigint,
               false_alarm_share double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tianyan, public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'rescue_performance: the range must end after it starts, got % to %',
            p_from, p_to;
    END IF;
    RETURN QUERY
    WITH member AS (
        SELECT g.by, g.name, e.registration_code, e.has_terminal
          FROM tianyan.elevator e,
               LATERAL (VALUES ('company', coalesce(e.maintenance_company, '(none recorded)')),
                               ('district', e.district)) AS g(by, name)
         WHERE p_districts IS NULL OR e.district = ANY (p_districts)),
    size AS (
        SELECT m.by, m.name, count(*) AS elevators,
               count(*) FILTER (WHERE m.has_terminal) AS monitored_elevators
          FROM member m GROUP BY m.by, m.name),
    happened AS (
        SELECT i.elevator_id, i.state, i.arrival_target_s,
               i.fault_type IN ('trapped_at_level', 'trapped_between_levels')
                   AND i.state <> 'false_alarm' AS trapping,
               coalesce(i.details ->> 'route', 'rescue') = 'rescue' AS rescue,
               extract(epoch FROM i.arrived_at - i.opened_at)::double precision AS arrival_s
          FROM tianyan.incident i
         WHERE i.opened_at >= p_from AND i.opened_at < p_to),
    figure AS (
        SELECT m.by, m.name,
               count(*) FILTER (WHERE h.trapping) AS trappings,
               count(*) FILTER (WHERE h.rescue) AS rescue_incidents,
               count(h.arrival_s) FILTER (WHERE h.rescue) AS arrivals,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY h.arrival_s / 60)
                   FILTER (WHERE h.rescue) AS arrival_p50_min,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY h.arrival_s / 60)
                   FILTER (WHERE h.rescue) AS arrival_p90_min,
               count(*) FILTER (WHERE h.rescue AND h.arrival_s <= h.arrival_target_s)
                   AS on_time,
               count(*) AS incidents,
               count(*) FILTER (WHERE h.state = 'false_alarm') AS false_alarms
          FROM member m JOIN happened h ON h.elevator_id = m.registration_code
         GROUP BY m.by, m.name)
    SELECT s.by, s.name, s.elevators, s.monitored_elevators,
           coalesce(f.trappings, 0),
           coalesce(f.trappings, 0) * 100.0 / nullif(s.monitored_elevators, 0)
               * (365 * 86400) / extract(epoch FROM p_to - p_from)::double precision,
           coalesce(f.rescue_incidents, 0), coalesce(f.arrivals, 0),
           f.arrival_p50_min, f.arrival_p90_min, coalesce(f.on_time, 0),
           f.on_time::double precision / nullif(f.arrivals, 0),
           coalesce(f.incidents, 0), coalesce(f.false_alarms, 0),
           f.false_alarms::double precision / nullif(f.incidents, 0)
      FROM size s LEFT JOIN figure f ON f.by = s.by AND f.name = s.name
     ORDER BY s.by, s.name;
END $$;

-- The maintenance companies ranked by risk and by rescue performance, for the elevators of
-- p_districts (NULL: all): the risk grades their elevators hold at p_to (each elevator's
-- latest risk_grade row graded at or before p_to) and rescue_performance over
-- [p_from, p_to). One row per company with at least one elevator.
--   maintenance_company          ('(none recorded)' for elevators with none on record)
--   elevators, graded            registered elevators; of them, graded by p_to
--   red, orange, yellow, blue    elevators holding each grade at p_to
--   red_orange_share             (red + orange) / graded, 0..1 (NULL: none graded)
--   mean_risk_score              mean score 0..100 of the graded (NULL: none graded)
--   risk_rank                    1 = the highest mean risk score (ties share a rank; NULL:
--                                none graded)
--   trappings_per_100_elevator_years, arrivals, arrival_p50_min, arrival_p90_min,
--   on_time_share, false_alarms, false_alarm_share   as rescue_performance
--   rescue_rank                  1 = the poorest rescue: lowest on-time share, then the
--                                slowest p90 arrival, then the most trappings per 100
--                                elevator-years (NULL: no arrival on record to judge by)
CREATE OR REPLACE FUNCTION maintenance_company_ranking(p_from timestamptz, p_to timestamptz,
                                                       p_districts text[] DEFAULT NULL)
RETURNS TABLE (maintenance_company text, elevators bigint, graded bigint, red bigint,
               orange bigint, yellow bigint, blue bigint,
               red_orange_share double precision, mean_risk_score double precision,
               risk_rank bigint, trappings_per_100_elevator_years double precision,
               arrivals bigint, arrival_p50_min double precision,
               arrival_p90_min double precision, on_time_share double precision,
               false_alarms bigint, false_alarm_share double precision, rescue_rank bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, tianyan, public, pg_temp AS $$
    WITH fleet AS (
        SELECT e.registration_code,
               coalesce(e.maintenance_company, '(none recorded)') AS company
          FROM tianyan.elevator e
         WHERE p_districts IS NULL OR e.district = ANY (p_districts)),
    grade AS (
        SELECT DISTINCT ON (r.elevator_id) r.elevator_id, r.grade, r.score
          FROM tianyan.risk_grade r
         WHERE r.graded_at <= p_to
         ORDER BY r.elevator_id, r.graded_at DESC),
    risk AS (
        SELECT f.company, count(*) AS elevators, count(g.grade) AS graded,
               count(*) FILTER (WHERE g.grade = 'red') AS red,
               count(*) FILTER (WHERE g.grade = 'orange') AS orange,
               count(*) FILTER (WHERE g.grade = 'yellow') AS yellow,
               count(*) FILTER (WHERE g.grade = 'blue') AS blue,
               avg(g.score)::double precision AS mean_risk_score
          FROM fleet f LEFT JOIN grade g ON g.elevator_id = f.registration_code
         GROUP BY f.company),
    rescue AS (
        SELECT * FROM tianyan.rescue_performance(p_from, p_to, p_districts) p
         WHERE p.by = 'company')
    SELECT k.company, k.elevators, k.graded, k.red, k.orange, k.yellow, k.blue,
           (k.red + k.orange)::double precision / nullif(k.graded, 0),
           k.mean_risk_score,
           CASE WHEN k.graded > 0 THEN rank() OVER (
               PARTITION BY k.graded > 0 ORDER BY k.mean_risk_score DESC) END AS risk_rank,
           p.trappings_per_100_elevator_years, p.arrivals, p.arrival_p50_min,
           p.arrival_p90_min, p.on_time_share, p.false_alarms, p.false_alarm_share,
           CASE WHEN p.arrivals > 0 THEN rank() OVER (
               PARTITION BY p.arrivals > 0
               ORDER BY p.on_time_share, p.arrival_p90_min DESC,
                        p.trappings_per_100_elevator_years DESC NULLS LAST) END
      FROM risk k JOIN rescue p ON p.name = k.company
     ORDER BY risk_rank NULLS LAST, k.company
$$;

-- Grade history per district, month by month (months of the city's calendar, Asia/Shanghai)
-- from the month of p_from to the month of p_to, for the elevators of p_districts (NULL:
-- all). risk_grade keeps a row when an elevator's grade or score changed; a grade change is
-- a row whose grade differs from the elevator's row before it.
--   month                        the month's first instant (timestamptz, local midnight)
--   district
--   red, orange, yellow, blue    elevators holding each grade at the month's end (at p_to
--                                for the month p_to falls in)
--   worsened, improved           elevators whose grade became more, or less, severe in the
--                                month (an elevator that did both counts in each)
--   orange_to_red, red_to_orange elevators that moved between these two in the month
CREATE OR REPLACE FUNCTION grade_history(p_from timestamptz, p_to timestamptz,
                                         p_districts text[] DEFAULT NULL)
RETURNS TABLE (month timestamptz, district text, red bigint, orange bigint, yellow bigint,
               blue bigint, worsened bigint, improved bigint, orange_to_red bigint,
               red_to_orange bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, tianyan, public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'grade_history: the range must end after it starts, got % to %',
            p_from, p_to;
    END IF;
    RETURN QUERY
    WITH months AS (
        SELECT m AT TIME ZONE 'Asia/Shanghai' AS month_start,
               least((m + interval '1 month') AT TIME ZONE 'Asia/Shanghai', p_to) AS month_end
          FROM generate_series(date_trunc('month', p_from AT TIME ZONE 'Asia/Shanghai'),
                               date_trunc('month', p_to AT TIME ZONE 'Asia/Shanghai'),
                               interval '1 month') AS m
         WHERE m AT TIME ZONE 'Asia/Shanghai' < p_to),
    fleet AS (
        SELECT e.registration_code, e.district FROM tianyan.elevator e
         WHERE p_districts IS NULL OR e.district = ANY (p_districts)),
    -- each grade row with the grade before it and until when it held
    spell AS (
        SELECT f.district, r.elevator_id, r.graded_at, r.grade,
               CASE r.grade WHEN 'red' THEN 1 WHEN 'orange' THEN 2 WHEN 'yellow' THEN 3
                            ELSE 4 END AS rank,
               lag(r.grade) OVER w AS grade_before,
               CASE lag(r.grade) OVER w WHEN 'red' THEN 1 WHEN 'orange' THEN 2
                    WHEN 'yellow' THEN 3 WHEN 'blue' THEN 4 END AS rank_before,
               lead(r.graded_at) OVER w AS until
          FROM tianyan.risk_grade r JOIN fleet f ON f.registration_code = r.elevator_id
         WHERE r.graded_at < p_to
        WINDOW w AS (PARTITION BY r.elevator_id ORDER BY r.graded_at)),
    held AS (
        SELECT m.month_start, s.district,
               count(*) FILTER (WHERE s.grade = 'red') AS red,
               count(*) FILTER (WHERE s.grade = 'orange') AS orange,
               count(*) FILTER (WHERE s.grade = 'yellow') AS yellow,
               count(*) FILTER (WHERE s.grade = 'blue') AS blue
          FROM months m JOIN spell s
            ON s.graded_at < m.month_end AND (s.until IS NULL OR s.until >= m.month_end)
         GROUP BY 1, 2),
    moved AS (
        SELECT m.month_start, s.district,
               count(DISTINCT s.elevator_id) FILTER (WHERE s.rank < s.rank_before) AS worsened,
               count(DISTINCT s.elevator_id) FILTER (WHERE s.rank > s.rank_before) AS improved,
               count(DISTINCT s.elevator_id)
                   FILTER (WHERE s.grade_before = 'orange' AND s.grade = 'red')
                   AS orange_to_red,
               count(DISTINCT s.elevator_id)
                   FILTER (WHERE s.grade_before = 'red' AND s.grade = 'orange')
                   AS red_to_orange
          FROM months m JOIN spell s
            ON s.graded_at >= m.month_start AND s.graded_at < m.month_end
         WHERE s.grade_before IS DISTINCT FROM s.grade AND s.grade_before IS NOT NULL
         GROUP BY 1, 2),
    cells AS (
        SELECT m.month_start, d.district
          FROM months m CROSS JOIN (SELECT DISTINCT f.district FROM fleet f) d)
    SELECT c.month_start, c.district,
           coalesce(h.red, 0), coalesce(h.orange, 0), coalesce(h.yellow, 0),
           coalesce(h.blue, 0), coalesce(v.worsened, 0), coalesce(v.improved, 0),
           coalesce(v.orange_to_red, 0), coalesce(v.red_to_orange, 0)
      FROM cells c
      LEFT JOIN held h ON h.month_start = c.month_start AND h.district = c.district
      LEFT JOIN moved v ON v.month_start = c.month_start AND v.district = c.district
     ORDER BY c.month_start, c.district;
END $$;
