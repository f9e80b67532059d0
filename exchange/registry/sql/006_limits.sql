-- Issue 11: a second declaration for the same member, producer and period is a revision
-- (DESIGN §9). Earlier rows stay as history, marked by the declaration that replaced them;
-- the current figure is the row that is not superseded.
ALTER TABLE production ADD COLUMN IF NOT EXISTS superseded_by uuid;
CREATE INDEX IF NOT EXISTS production_current
    ON production (participant, producer_id, period) WHERE superseded_by IS NULL;
