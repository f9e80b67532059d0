-- The regional registry: the region's single source of truth.

-- Authority public keys, by key id. A retired key still verifies history.
CREATE TABLE IF NOT EXISTS authority_keys (
    key_id        text PRIMARY KEY,
    producer      text NOT NULL,
    public_key    bytea NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz
);

-- Every event the registry decided on, with its raw signed bytes as evidence. The event_id
-- primary key is the consumer's tracking row: a redelivered event finds its row and is skipped.
CREATE TABLE IF NOT EXISTS event_log (
    event_id       uuid PRIMARY KEY,
    producer       text NOT NULL,          -- the authenticated producer (broker user), or claimed
    sequence       bigint,
    event_type     text NOT NULL,
    produced_at    timestamptz,
    received_at    timestamptz NOT NULL DEFAULT now(),
    certificate_id text,
    decision       text NOT NULL,          -- ACCEPTED | REJECTED
    reason         text,                   -- DESIGN §7 code when rejected
    detail         text NOT NULL DEFAULT '',
    body           bytea NOT NULL,
    -- The event id the message claimed (AMQP message_id or envelope event_id). Unauthentic
    -- messages are keyed by a hash of their bytes instead, so that a forged or corrupted copy
    -- can never block the genuine event that carries the same id.
    claimed_event_id uuid
);
CREATE INDEX IF NOT EXISTS event_log_rejected ON event_log (received_at) WHERE decision = 'REJECTED';
CREATE INDEX IF NOT EXISTS event_log_certificate ON event_log (certificate_id);
-- Voids that arrived before the certificate while the producer still had a gap below them:
-- decided when the gap closes (decision = 'HELD' until then).
CREATE INDEX IF NOT EXISTS event_log_held ON event_log (producer) WHERE decision = 'HELD';

-- Which (producer, sequence) numbers were received: a replay under a used number is refused,
-- and the holes are the sequence gaps.
CREATE TABLE IF NOT EXISTS producer_sequences (
    producer text NOT NULL,
    sequence bigint NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (producer, sequence)
);
CREATE TABLE IF NOT EXISTS producer_progress (
    producer   text PRIMARY KEY,
    high_water bigint NOT NULL DEFAULT 0
);
-- One row per missing sequence number; filled_at is set when the event arrives late.
CREATE TABLE IF NOT EXISTS sequence_gaps (
    producer    text NOT NULL,
    sequence    bigint NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    filled_at   timestamptz,
    PRIMARY KEY (producer, sequence)
);
CREATE INDEX IF NOT EXISTS sequence_gaps_open ON sequence_gaps (producer) WHERE filled_at IS NULL;

CREATE TABLE IF NOT EXISTS participants (
    code         text PRIMARY KEY,
    role         text NOT NULL,            -- REGION | MEMBER | PARTNER | OTHER
    status       text NOT NULL,            -- ADMITTED | SUSPENDED | WITHDRAWN
    effective_on date,
    reason       text NOT NULL DEFAULT '',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- true once a suspend/reinstate command changed it: seeding from the file then leaves it
    changed_by_event boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS participant_history (
    id           bigserial PRIMARY KEY,
    code         text NOT NULL,
    status       text NOT NULL,
    effective_on date,
    reason       text NOT NULL DEFAULT '',
    event_id     uuid,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS certificates (
    certificate_id      text PRIMARY KEY,
    producer            text NOT NULL,
    issuing_participant text NOT NULL,
    issuing_member      text,
    destination         text NOT NULL,
    scope               text NOT NULL,
    origin_type         text NOT NULL,
    origin_countries    text[] NOT NULL,
    date_of_issue       date NOT NULL,
    date_of_expiry      date NOT NULL,
    number_of_parcels   integer NOT NULL,
    total_carats        numeric(18,2) NOT NULL,
    total_value_usd     numeric(18,2) NOT NULL,
    body                jsonb NOT NULL,        -- the certificate as JSON (Certificate.to_json)
    content_hash        bytea NOT NULL,        -- of the Avro record: same number, other content?
    state               text NOT NULL,         -- ISSUED | VOIDED | REPLACED | IMPORT_CONFIRMED
    replaced_by         text,
    event_id            uuid NOT NULL,
    accepted_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS certificates_issue ON certificates (date_of_issue);

CREATE TABLE IF NOT EXISTS parcels (
    certificate_id text NOT NULL REFERENCES certificates ON DELETE CASCADE,
    parcel_no      integer NOT NULL,
    hs_code        text NOT NULL,          -- 7102.10 | 7102.21 | 7102.31
    carats         numeric(18,2) NOT NULL,
    value_usd      numeric(18,2) NOT NULL,
    origin_country text,
    PRIMARY KEY (certificate_id, parcel_no)
);

CREATE TABLE IF NOT EXISTS certificate_history (
    id             bigserial PRIMARY KEY,
    certificate_id text NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    state          text NOT NULL,
    detail         text NOT NULL DEFAULT '',
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS certificate_history_id ON certificate_history (certificate_id);

-- Import confirmations, including those that arrived before their certificate
-- (matched = false until the certificate is accepted).
CREATE TABLE IF NOT EXISTS import_confirmations (
    event_id              uuid PRIMARY KEY,
    certificate_id        text NOT NULL,
    issuing_participant   text NOT NULL,
    importing_participant text NOT NULL,
    received_on           date NOT NULL,
    parcels               integer NOT NULL,
    carats                numeric(18,2) NOT NULL,
    value_usd             numeric(18,2) NOT NULL,
    seal_intact           boolean NOT NULL,
    remarks               text NOT NULL DEFAULT '',
    matched               boolean NOT NULL DEFAULT false,
    accepted_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS import_confirmations_certificate ON import_confirmations (certificate_id);

CREATE TABLE IF NOT EXISTS production (
    event_id    uuid PRIMARY KEY,
    participant text NOT NULL,
    period      text NOT NULL,
    producer_id text NOT NULL,
    carats      numeric(18,2) NOT NULL,
    value_usd   numeric(18,2) NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now()
);
