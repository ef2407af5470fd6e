-- 0007 PostgreSQL security (issue 15, part 2): roles for the user units' and maintenance
-- companies' boards, the mapping of their login roles to what they may see, and row-level
-- security so that each sees only its own elevators and what belongs to them.
--
-- Design: a Grafana data source connects as one database user and cannot pass who is
-- looking in a way the panel SQL could not override (a session variable is one `SET`
-- away in any panel), so the identity is the login role itself: one login role per user
-- unit or maintenance company, member of the group role tianyan_unit or
-- tianyan_maintenance, and one Grafana organisation per unit/company whose data source
-- connects as that role (README § Production). tianyan.data_scope maps each login role to
-- its unit or company; the policies below read it by current_user.

DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['tianyan_unit', 'tianyan_maintenance'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      -- group roles: they never log in; their members do (`tianyan db scoped-role`)
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END $$;

-- Which unit or company a scoped login role stands for: exactly one of the two.
CREATE TABLE data_scope (
    role_name            text PRIMARY KEY,
    user_unit            text,
    maintenance_company  text,
    CHECK ((user_unit IS NULL) <> (maintenance_company IS NULL))
);

-- Row-level security. The owner (tianyan) is not subject to it; the pipeline and the
-- all-seeing readers get a policy that passes every row, the scoped roles one that passes
-- only their elevators' rows. A child table's policy asks whether its elevator is visible
-- in `elevator`, whose own policy does the scoping, so the rule lives in one place.
ALTER TABLE data_scope ENABLE ROW LEVEL SECURITY;
CREATE POLICY all_rows ON data_scope FOR ALL
    TO tianyan_writer, tianyan_analyst, tianyan_regulator USING (true) WITH CHECK (true);
CREATE POLICY own_row ON data_scope FOR SELECT
    TO tianyan_unit, tianyan_maintenance USING (role_name = current_user);

ALTER TABLE elevator ENABLE ROW LEVEL SECURITY;
CREATE POLICY all_rows ON elevator FOR ALL
    TO tianyan_writer, tianyan_analyst, tianyan_regulator USING (true) WITH CHECK (true);
CREATE POLICY own_elevators ON elevator FOR SELECT
    TO tianyan_unit, tianyan_maintenance
    USING (EXISTS (SELECT 1 FROM data_scope s
                   WHERE s.role_name = current_user
                     AND (s.user_unit = elevator.user_unit
                          OR s.maintenance_company = elevator.maintenance_company)));

DO $$
DECLARE t text;
BEGIN
  -- Plain tables only. A TimescaleDB hypertable's chunks copy its grants but not its
  -- policies, and every role may use the chunks' schema: a scoped role granted a hypertable
  -- could read another unit's rows from a chunk by name. So the scoped roles get no
  -- hypertable (raw samples, windows, trips, evidence) at all.
  FOREACH t IN ARRAY ARRAY['alert', 'incident', 'risk_grade'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY all_rows ON %I FOR ALL TO tianyan_writer, tianyan_analyst,'
                   ' tianyan_regulator USING (true) WITH CHECK (true)', t);
    EXECUTE format('CREATE POLICY own_elevators ON %I FOR SELECT TO tianyan_unit,'
                   ' tianyan_maintenance USING (elevator_id IN'
                   ' (SELECT registration_code FROM tianyan.elevator))', t);
  END LOOP;
END $$;

ALTER TABLE incident_event ENABLE ROW LEVEL SECURITY;
CREATE POLICY all_rows ON incident_event FOR ALL
    TO tianyan_writer, tianyan_analyst, tianyan_regulator USING (true) WITH CHECK (true);
CREATE POLICY own_elevators ON incident_event FOR SELECT
    TO tianyan_unit, tianyan_maintenance
    USING (incident_id IN (SELECT incident_id FROM tianyan.incident));
