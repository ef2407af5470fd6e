-- Views through which the scoped roles (tianyan_unit, tianyan_maintenance: migration 0007)
-- read what lives in hypertables. They cannot be granted a hypertable itself: its chunks
-- copy the grants but not the row-level policies. These views read with their owner's
-- rights and filter by the reader: a scoped login role gets only its own elevators' rows
-- (by tianyan.data_scope and current_user, which in a view is the reader); every other
-- role that may read the view (analyst, regulator) gets all rows. security_barrier keeps a
-- reader's own conditions from running before the filter.
--
-- Created only once 0007 has run (a database migrated part-way has no data_scope).
DO $do$ BEGIN
  IF to_regclass('tianyan.data_scope') IS NOT NULL THEN
    -- the service mode of each raw sample: the maintenance board's out-of-service periods
    -- (recent and packed samples, through raw_sample once 0012 has run; a time-range query
    -- bounds stored_time as well, see raw_sample in 10_views.sql)
    IF to_regclass('tianyan.raw_sample') IS NOT NULL THEN
      CREATE OR REPLACE VIEW service_mode_sample WITH (security_barrier = true) AS
      SELECT s.time, s.elevator_id, s.service_mode, s.stored_time
        FROM raw_sample s
       WHERE (SELECT NOT (pg_has_role(current_user, 'tianyan_unit', 'USAGE')
                          OR pg_has_role(current_user, 'tianyan_maintenance', 'USAGE')))
          OR s.elevator_id IN (
               SELECT e.registration_code
                 FROM elevator e JOIN data_scope d ON d.role_name = current_user
                WHERE d.user_unit = e.user_unit
                   OR d.maintenance_company = e.maintenance_company);
    ELSE
    CREATE OR REPLACE VIEW service_mode_sample WITH (security_barrier = true) AS
    SELECT s.time, s.elevator_id, s.service_mode
      FROM telemetry_sample s
     WHERE (SELECT NOT (pg_has_role(current_user, 'tianyan_unit', 'USAGE')
                        OR pg_has_role(current_user, 'tianyan_maintenance', 'USAGE')))
        OR s.elevator_id IN (
             SELECT e.registration_code
               FROM elevator e JOIN data_scope d ON d.role_name = current_user
              WHERE d.user_unit = e.user_unit
                 OR d.maintenance_company = e.maintenance_company);
    END IF;
  END IF;
END $do$;
