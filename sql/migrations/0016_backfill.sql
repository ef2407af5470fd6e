-- 0016 backfill that corrects (issue 16, part 5): `tianyan backfill` re-derives windows,
-- trips and alerts from the stored raw samples with the current detectors and thresholds,
-- replacing what was there one slice (one elevator over the range) per transaction. These
-- two tables record each run and what each slice replaced; the ledger records each slice
-- too (an entry 'backfill', written by backfill_remove_alerts, sql/idempotent/25_backfill.sql).

-- One row per `tianyan backfill` run (a --dry-run writes none).
CREATE TABLE backfill_run (
    backfill_run_id    uuid PRIMARY KEY,
    requested_by       text NOT NULL,                 -- the operating-system user and host
    database_role      text NOT NULL DEFAULT current_user,
    started_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at        timestamptz,                   -- NULL: still running, or stopped
    range_start        timestamptz NOT NULL,
    range_end          timestamptz NOT NULL,
    warmup_s           integer NOT NULL CHECK (warmup_s >= 0),
    elevators          text[] NOT NULL DEFAULT '{}',  -- --elevator filters ({} none)
    districts          text[] NOT NULL DEFAULT '{}',  -- --district filters ({} none)
    thresholds_sha256  text NOT NULL,                 -- digest of `thresholds` below
    thresholds         jsonb NOT NULL,                -- every detector threshold applied
    slices             integer NOT NULL DEFAULT 0,    -- slices committed
    CHECK (range_end > range_start)
);

-- One row per slice committed: what it deleted, inserted and found unchanged in each table,
-- and which alerts it removed (each also named, with its last digest, in the slice's ledger
-- entry) or had to keep (bound to an incident, which a backfill never changes).
CREATE TABLE backfill_slice (
    backfill_run_id    uuid NOT NULL REFERENCES backfill_run,
    elevator_id        char(20) COLLATE "C" NOT NULL,
    committed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    messages           integer NOT NULL,              -- raw messages read, warm-up included
    windows_deleted    integer NOT NULL,
    windows_inserted   integer NOT NULL,
    windows_unchanged  integer NOT NULL,
    trips_deleted      integer NOT NULL,
    trips_inserted     integer NOT NULL,
    trips_unchanged    integer NOT NULL,
    alerts_deleted     integer NOT NULL,
    alerts_inserted    integer NOT NULL,
    alerts_unchanged   integer NOT NULL,
    alerts_kept        integer NOT NULL,              -- differ, but an incident holds them
    removed_alert_ids  uuid[] NOT NULL,
    kept_alert_ids     uuid[] NOT NULL,
    ledger_seq         bigint NOT NULL,               -- the slice's 'backfill' ledger entry
    PRIMARY KEY (backfill_run_id, elevator_id)
);
