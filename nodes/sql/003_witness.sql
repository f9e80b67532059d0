-- The node as a witness of the registry's log (DESIGN §12).

-- Every checkpoint this node verified (signature, and consistency with the one before) and
-- cosigned. Never updated: a checkpoint that contradicts these rows is refused, not stored.
CREATE TABLE IF NOT EXISTS witness_checkpoints (
    tree_size   bigint PRIMARY KEY,
    root_hash   bytea NOT NULL,
    note        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Checkpoints refused, with why: the evidence of a forked, rewritten or forged log.
CREATE TABLE IF NOT EXISTS witness_refusals (
    id          bigserial PRIMARY KEY,
    tree_size   bigint,
    reason      text NOT NULL,   -- inconsistent | bad_signature | unverifiable | malformed
    detail      text NOT NULL,
    note        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
