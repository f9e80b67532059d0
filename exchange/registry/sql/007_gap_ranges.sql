-- Issue 11, item 7: open sequence gaps are stored as ranges. One row per missing number made a
-- jump of 10^6 write 1,000,059 rows and slowed every later batch of that producer for good; a
-- jump is now one row, and filling a number inside a range splits it (registry/store.py).
CREATE TABLE IF NOT EXISTS sequence_gap_ranges (
    producer       text NOT NULL,
    first_sequence bigint NOT NULL,
    last_sequence  bigint NOT NULL,
    detected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer, first_sequence),
    CHECK (first_sequence <= last_sequence)
);
-- The numbers that arrived late, with when their gap was detected: the history the rows of
-- sequence_gaps kept in filled_at.
CREATE TABLE IF NOT EXISTS sequence_gap_fills (
    producer    text NOT NULL,
    sequence    bigint NOT NULL,
    detected_at timestamptz NOT NULL,
    filled_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer, sequence)
);

INSERT INTO sequence_gap_fills (producer, sequence, detected_at, filled_at)
SELECT producer, sequence, detected_at, filled_at FROM sequence_gaps WHERE filled_at IS NOT NULL;
INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence, detected_at)
SELECT producer, min(sequence), max(sequence), min(detected_at) FROM (
    SELECT producer, sequence, detected_at,
           sequence - row_number() OVER (PARTITION BY producer ORDER BY sequence) AS island
    FROM sequence_gaps WHERE filled_at IS NULL
) g GROUP BY producer, island;
DROP TABLE sequence_gaps;

-- One row per missing or late number, as before, for reading by hand (psql, tests): it expands
-- the ranges, so no service reads it.
CREATE VIEW sequence_gaps AS
SELECT r.producer, s.sequence, r.detected_at, NULL::timestamptz AS filled_at
FROM sequence_gap_ranges r CROSS JOIN LATERAL
     generate_series(r.first_sequence, r.last_sequence) AS s(sequence)
UNION ALL
SELECT producer, sequence, detected_at, filled_at FROM sequence_gap_fills;
