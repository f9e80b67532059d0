-- A national node's own store. The outbox tables come from exchange/sql.

-- The next serial of the regional certificate numbers this member allocates, per year.
CREATE TABLE IF NOT EXISTS serials (
    year        integer PRIMARY KEY,
    last_serial integer NOT NULL
);

-- Every event this node produced, with the registry's last answer about it. Business rows
-- reference it; the references are checked at commit, when a chunk's events are written.
CREATE TABLE IF NOT EXISTS node_events (
    event_id        uuid PRIMARY KEY,
    sequence        bigint NOT NULL UNIQUE,
    event_type      text NOT NULL,
    subject         text NOT NULL,           -- certificate id, or period/producer
    registry_state  text NOT NULL DEFAULT 'pending',  -- pending | accepted | rejected
    registry_reason text,
    registry_detail text,
    decided_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS certificates (
    certificate_id  text PRIMARY KEY,
    destination     text NOT NULL,
    date_of_issue   date NOT NULL,
    date_of_expiry  date NOT NULL,
    total_carats    numeric(18,2) NOT NULL,
    total_value_usd numeric(18,2) NOT NULL,
    body            jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'ISSUED',  -- ISSUED | VOIDED | REPLACED
    replaced_by     text,
    event_id        uuid NOT NULL REFERENCES node_events DEFERRABLE INITIALLY DEFERRED,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS import_confirmations (
    event_id            uuid PRIMARY KEY REFERENCES node_events DEFERRABLE INITIALLY DEFERRED,
    certificate_id      text NOT NULL,
    issuing_participant text NOT NULL,
    received_on         date NOT NULL,
    parcels             integer NOT NULL,
    carats              numeric(18,2) NOT NULL,
    value_usd           numeric(18,2) NOT NULL,
    seal_intact         boolean NOT NULL,
    remarks             text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS production (
    event_id    uuid PRIMARY KEY REFERENCES node_events DEFERRABLE INITIALLY DEFERRED,
    period      text NOT NULL,
    producer_id text NOT NULL,
    carats      numeric(18,2) NOT NULL,
    value_usd   numeric(18,2) NOT NULL
);

-- Messages received from the region, by event id: the inbox consumer's tracking rows.
CREATE TABLE IF NOT EXISTS inbox (
    event_id    uuid PRIMARY KEY,
    producer    text NOT NULL,
    sequence    bigint NOT NULL,
    event_type  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body        bytea NOT NULL
);

-- Shipments announced to this participant (ShipmentExpected), until confirmed.
CREATE TABLE IF NOT EXISTS expected_shipments (
    certificate_id      text PRIMARY KEY,
    issuing_participant text NOT NULL,
    body                jsonb NOT NULL,
    accepted_at         timestamptz NOT NULL,
    confirmed           boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS discrepancies (
    discrepancy_id bigint PRIMARY KEY,
    kind           text NOT NULL,
    certificate_id text,
    period         text,
    participants   text[] NOT NULL,
    detail         text NOT NULL,
    raised_on      date NOT NULL
);

CREATE TABLE IF NOT EXISTS participant_status (
    participant  text PRIMARY KEY,
    status       text NOT NULL,
    effective_on date NOT NULL,
    reason       text NOT NULL DEFAULT ''
);
