-- The node's web app and API (issue 14): request ids, production revisions, users, tokens,
-- drafts and the audit trail.

-- Operations applied under a request_id (DESIGN §9): a repeat is answered, never applied
-- again. Only applied operations are here: a refusal leaves nothing, so a corrected retry
-- under the same id applies.
CREATE TABLE IF NOT EXISTS applied_requests (
    request_id text PRIMARY KEY CHECK (length(request_id) BETWEEN 1 AND 100),
    op         text NOT NULL,
    subject    text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- A second declaration for a period and producer replaces the first (a revision). Older
-- duplicates from before this rule are dropped, keeping the latest event.
DELETE FROM production p USING production q, node_events pe, node_events qe
 WHERE p.period = q.period AND p.producer_id = q.producer_id
   AND pe.event_id = p.event_id AND qe.event_id = q.event_id AND pe.sequence < qe.sequence;
ALTER TABLE production ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS production_period_producer ON production (period, producer_id);
