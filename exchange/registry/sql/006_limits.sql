-- Issue 11: a second declaration for the same member, producer and period is a revision
-- (DESIGN §9). Earlier rows stay as history, marked by the declaration that replaced them;
-- the current figure is the row that is not superseded.
ALTER TABLE production ADD COLUMN IF NOT EXISTS superseded_by uuid;
CREATE INDEX IF NOT EXISTS production_current
    ON production (participant, producer_id, period) WHERE superseded_by IS NULL;

-- Issue 11, item 7: a batch reads only the open gaps it fills and each producer's lowest other
-- one (registry/limits.py), in sequence order from this index.
CREATE INDEX IF NOT EXISTS sequence_gaps_open_sequence
    ON sequence_gaps (producer, sequence) WHERE filled_at IS NULL;
