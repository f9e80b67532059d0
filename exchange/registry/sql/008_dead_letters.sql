-- Issue 11, item 10: dead letters live here, indexed, not in the queue. Re-injecting one id
-- scanned the whole of kpx.registry.dead (2 minutes at 38,000 messages); the registry now
-- moves every dead letter into this table (registry/deadmover.py, acked after the commit)
-- and lists and re-injects by index (registry/deadstore.py). The queue, bounded with an
-- alert at 80 %, is only the buffer in front of it.
CREATE TABLE IF NOT EXISTS dead_letters (
    id             bigserial PRIMARY KEY,
    -- sha256 of where it failed, its routing key, message id and body: the same dead copy
    -- delivered again (a crash between the commit and the ack) finds its row, never a second.
    digest         bytea NOT NULL UNIQUE,
    message_id     text,
    event_id       uuid,            -- the message id when it is one (kpx sends event ids)
    failed_queue   text NOT NULL,   -- the queue it failed in (x-kpx-queue, or the broker's)
    failed_exchange text NOT NULL,  -- the exchange that feeds that queue: where it goes back
    routing_key    text NOT NULL,
    reason         text NOT NULL,   -- exactly as published; escaped only when shown
    message_type   text,
    content_type   text,
    headers        jsonb NOT NULL,  -- the AMQP headers, JSON-safe (bytes as text)
    body           bytea NOT NULL,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    times_dead     integer NOT NULL DEFAULT 1,  -- dead again after a re-injection: + 1
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'reinjected')),
    reinjections   integer NOT NULL DEFAULT 0,
    reinjected_at  timestamptz,     -- the last re-injection, kept when it comes back dead
    reinjected_by  text
);
CREATE INDEX IF NOT EXISTS dead_letters_by_message ON dead_letters (message_id);
CREATE INDEX IF NOT EXISTS dead_letters_pending ON dead_letters (id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS dead_letters_by_queue ON dead_letters (failed_queue, id);
CREATE INDEX IF NOT EXISTS dead_letters_by_last_seen ON dead_letters (last_seen, id);
