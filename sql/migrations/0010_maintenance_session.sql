-- 0010 maintenance visits, measured (issue 16, part 6).

-- One row per maintenance visit the terminal showed: the car in inspection (service mode 2,
-- GB/T 24476; usually announced by event 43), from the worker's session segmentation
-- (streams/maintenance.py). end_time and duration_s are NULL while the visit goes on; the
-- sink fills them in when it ends. A plain table, not a hypertable: about two rows per
-- elevator a month, and the maintenance companies' scoped roles read it under row-level
-- security (a hypertable's chunks would not carry the policies, migration 0007).
CREATE TABLE maintenance_session (
    elevator_id      char(20) COLLATE "C" NOT NULL,
    start_time       timestamptz NOT NULL,
    end_time         timestamptz,
    duration_s       real,
    inspection_runs  integer NOT NULL DEFAULT 0,
    event_43         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (elevator_id, start_time),
    CHECK (end_time IS NULL OR end_time >= start_time),
    CHECK ((end_time IS NULL) = (duration_s IS NULL))
);
CREATE INDEX maintenance_session_end_idx ON maintenance_session (elevator_id, end_time DESC);

ALTER TABLE maintenance_session ENABLE ROW LEVEL SECURITY;
CREATE POLICY all_rows ON maintenance_session FOR ALL
    TO tianyan_writer, tianyan_analyst, tianyan_regulator USING (true) WITH CHECK (true);
CREATE POLICY own_elevators ON maintenance_session FOR SELECT
    TO tianyan_unit, tianyan_maintenance
    USING (elevator_id IN (SELECT registration_code FROM tianyan.elevator));
