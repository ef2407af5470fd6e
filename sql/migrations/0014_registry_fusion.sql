-- 0014 the registry: fusion, not overwrite (issue 16, part 8).
--
-- The registry fuses exports from several sources (the regulator's registry, the inspection
-- agency's inspection dates, the user units' contact lists, …), each possibly partial. An
-- import updates only the columns its file carries; every stored value keeps the source
-- and the date (as_of) it came from; a disagreement between two sources is recorded here,
-- never silently overwritten. The precedence rule is registry/fusion.py's (README § The
-- elevator registry).

-- Product-quality tracing: who built the elevator and which model it is.
ALTER TABLE elevator ADD COLUMN manufacturer text;
ALTER TABLE elevator ADD COLUMN model text;

-- One row per stored (non-NULL) value of the registry: where it came from and as of when.
--   value        the value as text, for people (the typed value is in elevator)
--   source       the source's name as the import named it (`registry import --source`)
--   as_of        the date the source's export describes
--   imported_at  when the import that set or last confirmed it ran
-- No foreign key to elevator: a whole registry's import writes ≈ 19 rows per elevator, and
-- the per-row key check cost 2 of its 14 s for 40,000 elevators (`tianyan bench
-- registry`); only imports write here, after the elevator's row.
CREATE TABLE elevator_provenance (
    registration_code  char(20) COLLATE "C" NOT NULL,
    column_name        text NOT NULL,
    value              text NOT NULL,
    source             text NOT NULL CHECK (source <> ''),
    as_of              date NOT NULL,
    imported_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (registration_code, column_name)
);

-- Every disagreement between two sources on one value, as the import that met it found
-- it: the value stored then (and its provenance), the value offered, and what the
-- precedence rule did (replaced: the offered value is newer and now stored; kept: it is
-- not newer and the stored value stays).
CREATE TABLE registry_conflict (
    conflict_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    registration_code  char(20) COLLATE "C" NOT NULL,
    column_name        text NOT NULL,
    stored_value       text NOT NULL,
    stored_source      text NOT NULL,
    stored_as_of       date NOT NULL,
    offered_value      text NOT NULL,
    offered_source     text NOT NULL,
    offered_as_of      date NOT NULL,
    outcome            text NOT NULL CHECK (outcome IN ('replaced', 'kept')),
    detected_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registry_conflict_elevator_idx ON registry_conflict (registration_code, detected_at);
CREATE INDEX registry_conflict_detected_idx ON registry_conflict (detected_at);

-- Values stored before this migration have no recorded source: they are dated by their
-- row's last update (the city's date) and named as such, so that the precedence rule
-- applies to them like to any other.
INSERT INTO elevator_provenance (registration_code, column_name, value, source, as_of, imported_at)
SELECT e.registration_code, j.key, j.value #>> '{}', 'before provenance (migration 0014)',
       (e.updated_at AT TIME ZONE 'Asia/Shanghai')::date, e.updated_at
  FROM elevator e,
       jsonb_each(to_jsonb(e) - 'registration_code' - 'updated_at') j
 WHERE j.value <> 'null'::jsonb;
