-- The registry's transparency log (DESIGN §12): an RFC 6962 Merkle tree over the envelope
-- bytes of every accepted event, in commit order, appended in the decision's transaction.

-- One row: the tree size. Appending updates it first, so concurrent registry processes take
-- leaf indexes one batch after the other (the row lock is held until commit).
CREATE TABLE IF NOT EXISTS log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tree_size bigint NOT NULL
);
INSERT INTO log_head (tree_size) VALUES (0) ON CONFLICT DO NOTHING;

-- Leaf i is the event's envelope bytes (event_log.body): referenced, not copied. No foreign
-- key on purpose: `kpx registry log verify` must be able to report a deleted event.
CREATE TABLE IF NOT EXISTS log_leaves (
    leaf_index bigint PRIMARY KEY,
    event_id   uuid NOT NULL UNIQUE,
    leaf_hash  bytea NOT NULL
);

-- Every complete subtree hash once, at its stored-hash index (exchange/tlog/tree.py).
CREATE TABLE IF NOT EXISTS log_hashes (
    hash_index bigint PRIMARY KEY,
    hash       bytea NOT NULL
);

-- Every checkpoint the registry signed (C2SP tlog-checkpoint as a signed note). The one
-- served is the newest announced to the witnesses: a batch of nothing but cosignatures is
-- checkpointed, not announced (exchange/registry/witnessing.py).
CREATE TABLE IF NOT EXISTS log_checkpoints (
    tree_size bigint PRIMARY KEY,
    root_hash bytea NOT NULL,
    note      text NOT NULL,
    announced boolean NOT NULL DEFAULT true,
    signed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS log_checkpoints_served ON log_checkpoints (tree_size) WHERE announced;

-- Cosignatures the witnesses (the nodes) returned: one C2SP tlog-cosignature line each.
CREATE TABLE IF NOT EXISTS log_cosignatures (
    tree_size   bigint NOT NULL,
    witness     text NOT NULL,
    line        text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tree_size, witness)
);
