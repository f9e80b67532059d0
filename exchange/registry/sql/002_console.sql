-- The regional console: its users, every act they took, and the history of
-- notes on discrepancies (a note is never overwritten: each resolve or reopen adds a row).

CREATE TABLE IF NOT EXISTS console_users (
    username      text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('analyst', 'admin')),
    password_hash text NOT NULL,            -- argon2id, never the password
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    -- Sessions signed before this are no longer honoured: set by a sign-out (every session of
    -- the user ends) and by a password or role reset. A signed cookie cannot be revoked else.
    sessions_after timestamptz
);

-- Every console act: who, when, what, on what, and the words they gave.
CREATE TABLE IF NOT EXISTS console_audit (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,                -- console username, or 'cli' for the command line
    action    text NOT NULL,                -- login, logout, suspend, reinstate, resolve, ...
    target    text NOT NULL DEFAULT '',     -- participant code, discrepancy id, message id
    detail    text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS console_audit_at ON console_audit (at);

-- recon.discrepancies keeps the latest status and note (what `discrepancies --json` shows);
-- this is the whole history. No foreign key: recon's schema is migrated by the reconciler.
CREATE TABLE IF NOT EXISTS discrepancy_notes (
    id             bigserial PRIMARY KEY,
    discrepancy_id bigint NOT NULL,
    status         text NOT NULL CHECK (status IN ('OPEN', 'RESOLVED')),  -- after this act
    note           text NOT NULL,
    author         text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS discrepancy_notes_of ON discrepancy_notes (discrepancy_id, id);
