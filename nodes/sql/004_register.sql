-- This member's register of mines, artisanal cooperatives, dealers and exporters (DESIGN §14),
-- the same tables as the registry's (exchange/registry/register.py reads and writes both), with
-- its history: every registration (version) and every revocation is a row, never updated,
-- so "what was valid on which date" can be answered for any date. seq, shared by both tables,
-- is the order of recording: a revocation ends the versions recorded before it (see
-- exchange/domain/register.py, whose Register.valid_on this mirrors).
CREATE SEQUENCE IF NOT EXISTS register_seq;

CREATE TABLE IF NOT EXISTS register_entries (
    seq         bigint PRIMARY KEY DEFAULT nextval('register_seq'),
    member      text NOT NULL,
    entry_id    text NOT NULL,
    kind        text NOT NULL,       -- MINE | ARTISANAL_COOPERATIVE | DEALER | EXPORTER
    name        text NOT NULL,
    licence_no  text NOT NULL,
    valid_from  date NOT NULL,
    valid_until date,                -- last valid day; NULL: open-ended
    zone        text,
    members     integer,             -- registered miners of a cooperative
    event_id    uuid NOT NULL UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS register_entries_id ON register_entries (member, entry_id);
CREATE INDEX IF NOT EXISTS register_entries_licence ON register_entries (member, licence_no);

CREATE TABLE IF NOT EXISTS register_revocations (
    seq         bigint PRIMARY KEY DEFAULT nextval('register_seq'),
    member      text NOT NULL,
    entry_id    text NOT NULL,
    effective   date NOT NULL,       -- first day the licence is no longer valid
    reason      text NOT NULL DEFAULT '',
    event_id    uuid NOT NULL UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS register_revocations_id ON register_revocations (member, entry_id);
