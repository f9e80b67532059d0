-- DESIGN §15: the registry's KeyRevoked notices to this node — which of its keys no longer
-- sign, from which day, and why (shown by `kpx node keys show`).
CREATE TABLE IF NOT EXISTS key_revocations (
    key_id       text PRIMARY KEY,
    revoked_from date NOT NULL,
    reason       text NOT NULL DEFAULT '',
    received_at  timestamptz NOT NULL DEFAULT now()
);
