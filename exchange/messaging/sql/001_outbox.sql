-- The transactional outbox shared by every producer (nodes, registry, reconciler).
-- A business row and the signed event that announces it commit in one transaction; the relay
-- publishes unsent rows in id order and marks them sent only after the broker confirms.
CREATE TABLE IF NOT EXISTS producer_sequence (
    producer      text PRIMARY KEY,
    last_sequence bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    relay       text NOT NULL,          -- which relay publishes it (a producer identity)
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (relay, event_id, exchange)
);

CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (relay, id) WHERE sent_at IS NULL;
