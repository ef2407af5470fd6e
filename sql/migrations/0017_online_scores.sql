-- 0017 online-learning scores stored with what they score (issue 14, part 2).

-- The worker's online-learning detectors (detectors/online.py) score every trip and every
-- active one-minute window of every elevator against what they learnt of it and of its
-- cohort: in [0, 1], 0.5 the alarm threshold (`online_anomaly` is raised at or above it
-- once the elevator's own model is warm). NULL while the models warm up, for 1-s and idle
-- windows, for inspection runs, and for rows written before this migration. A column on
-- the row it scores, not a table of its own: the score is one number per row, written in
-- the same COPY, and every board that reads trips or windows can show it without a join.
ALTER TABLE trip ADD COLUMN online_score real
    CHECK (online_score IS NULL OR (online_score >= 0 AND online_score <= 1));
ALTER TABLE window_feature ADD COLUMN online_score real
    CHECK (online_score IS NULL OR (online_score >= 0 AND online_score <= 1));
