-- 0002 fault labels: the simulator's ground truth, one row per injected fault, so that
-- detectors can be evaluated against what really happened.

CREATE TABLE fault_label (
    run_id       text NOT NULL,
    label_id     integer NOT NULL,
    elevator_id  char(20) COLLATE "C" NOT NULL,
    fault_type   text NOT NULL,
    gb_code      char(2),
    onset        timestamptz NOT NULL,
    ended        timestamptz,
    params       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, label_id)
);
CREATE INDEX fault_label_elevator_idx ON fault_label (elevator_id, onset);
