-- 0003 alerts carry their state: a detector raises a condition and later clears it (the car
-- reached a level and the doors opened); both are kept, under the same natural key.

ALTER TABLE alert ADD COLUMN state text NOT NULL DEFAULT 'raised'
    CHECK (state IN ('raised', 'cleared'));
ALTER TABLE alert DROP CONSTRAINT alert_alert_key_key;
ALTER TABLE alert ADD CONSTRAINT alert_key_state_key UNIQUE (alert_key, state);
