-- The region's register of mines, artisanal cooperatives, dealers and exporters (DESIGN §14),
-- with its history: every registration (version) and every revocation is a row, never updated,
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

-- A parcel may name the register id of the mine or cooperative it came from.
ALTER TABLE parcels ADD COLUMN IF NOT EXISTS producer_id text;
CREATE INDEX IF NOT EXISTS parcels_producer ON parcels (producer_id) WHERE producer_id IS NOT NULL;

-- External trade figures (kpx registry import-trade), versioned by source like the statistics:
-- each import of a source is a new version; the reconciler reads the latest of each source.
CREATE TABLE IF NOT EXISTS trade_imports (
    import_id   bigserial PRIMARY KEY,
    source      text NOT NULL,
    version     integer NOT NULL,
    file_name   text NOT NULL,
    file_format text NOT NULL,       -- plain | comtrade
    rows        integer NOT NULL,
    skipped     integer NOT NULL,    -- rows of other HS headings, flows or the World aggregate
    imported_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, version)
);
CREATE TABLE IF NOT EXISTS trade_rows (
    import_id  bigint NOT NULL REFERENCES trade_imports ON DELETE CASCADE,
    line       integer NOT NULL,
    period     text NOT NULL,        -- 2026, 2026-H1, 2026-Q1 or 2026-01
    first_day  date NOT NULL,
    last_day   date NOT NULL,
    reporter   text NOT NULL,        -- ISO alpha-2
    partner    text NOT NULL,        -- ISO alpha-2
    flow       text NOT NULL CHECK (flow IN ('X', 'M')),
    hs_code    text NOT NULL,        -- 7102, or a 6-digit sub-heading 710210 / 710221 / 710231
    carats     numeric(18,2) NOT NULL,
    value_usd  numeric(18,2) NOT NULL,
    PRIMARY KEY (import_id, line)
);
