-- The reconciler's projection of the registry's accepted events, in its own schema of the
-- registry database. It reads event_log, sequence_gaps and participants; it never writes them.
CREATE SCHEMA IF NOT EXISTS recon;

-- Tracking rows: an event id seen once is skipped when redelivered.
CREATE TABLE IF NOT EXISTS recon.processed (
    event_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    producer     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS recon.certificates (
    certificate_id      text PRIMARY KEY,
    issuing_participant text NOT NULL,
    exporter            text NOT NULL,   -- issuing member, or the issuing participant (partner)
    destination         text NOT NULL,
    origin_type         text NOT NULL,
    origin_countries    text[] NOT NULL,
    date_of_issue       date NOT NULL,
    date_of_expiry      date NOT NULL,
    number_of_parcels   integer NOT NULL,
    total_carats        numeric(18,2) NOT NULL,
    total_value_usd     numeric(18,2) NOT NULL,
    event_id            uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS recon_certificates_expiry ON recon.certificates (date_of_expiry);
CREATE INDEX IF NOT EXISTS recon_certificates_issue ON recon.certificates (date_of_issue);

-- origin is the parcel's own origin, else the certificate's single origin country, else NULL.
CREATE TABLE IF NOT EXISTS recon.parcels (
    certificate_id text NOT NULL,
    parcel_no      integer NOT NULL,
    hs_code        text NOT NULL,          -- 7102.10 | 7102.21 | 7102.31
    carats         numeric(18,2) NOT NULL,
    value_usd      numeric(18,2) NOT NULL,
    origin         text,
    PRIMARY KEY (certificate_id, parcel_no)
);

-- seq keeps arrival order: the first confirmation showing a problem describes it.
CREATE TABLE IF NOT EXISTS recon.confirmations (
    event_id              uuid PRIMARY KEY,
    seq                   bigserial NOT NULL,
    certificate_id        text NOT NULL,
    issuing_participant   text NOT NULL,
    importing_participant text NOT NULL,
    received_on           date NOT NULL,
    parcels               integer NOT NULL,
    carats                numeric(18,2) NOT NULL,
    value_usd             numeric(18,2) NOT NULL,
    seal_intact           boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS recon_confirmations_certificate
    ON recon.confirmations (certificate_id, received_on);
CREATE INDEX IF NOT EXISTS recon_confirmations_received ON recon.confirmations (received_on);

CREATE TABLE IF NOT EXISTS recon.voids (
    certificate_id text PRIMARY KEY,
    voided_on      date NOT NULL,
    replaced_by    text,
    reason         text NOT NULL DEFAULT '',
    event_id       uuid NOT NULL
);

CREATE TABLE IF NOT EXISTS recon.production (
    event_id    uuid PRIMARY KEY,
    participant text NOT NULL,
    period      text NOT NULL,            -- half-year, 2026-H1
    producer_id text NOT NULL,
    carats      numeric(18,2) NOT NULL,
    value_usd   numeric(18,2) NOT NULL
);

-- Each finding once, under its dedup key (kind + certificate, or kind + pair + period).
CREATE TABLE IF NOT EXISTS recon.discrepancies (
    id             bigserial PRIMARY KEY,
    dedup_key      text NOT NULL UNIQUE,
    kind           text NOT NULL,
    certificate_id text,
    participants   text[] NOT NULL,
    period         text,
    detail         text NOT NULL,
    status         text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'RESOLVED')),
    note           text NOT NULL DEFAULT '',
    raised_on      date NOT NULL,
    raised_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    run_id         bigint              -- the reconcile run that raised it (NULL: event time)
);
CREATE INDEX IF NOT EXISTS recon_discrepancies_kind ON recon.discrepancies (kind, status);
CREATE INDEX IF NOT EXISTS recon_discrepancies_run ON recon.discrepancies (run_id);
CREATE SEQUENCE IF NOT EXISTS recon.run_ids;

-- Published versions of the KP statistics of a period.
CREATE TABLE IF NOT EXISTS recon.statistics_versions (
    period       text NOT NULL,
    version      integer NOT NULL,
    generated_at timestamptz NOT NULL DEFAULT now(),
    figures      jsonb NOT NULL,
    PRIMARY KEY (period, version)
);
