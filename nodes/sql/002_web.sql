-- The node's web app and API (issue 14): request ids, production revisions, users, tokens,
-- drafts and the audit trail.

-- Operations applied under a request_id (DESIGN §9): a repeat is answered, never applied
-- again. Only applied operations are here: a refusal leaves nothing, so a corrected retry
-- under the same id applies.
CREATE TABLE IF NOT EXISTS applied_requests (
    request_id text PRIMARY KEY CHECK (length(request_id) BETWEEN 1 AND 100),
    op         text NOT NULL,
    subject    text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- A second declaration for a period and producer replaces the first (a revision). Older
-- duplicates from before this rule are dropped, keeping the latest event.
DELETE FROM production p USING production q, node_events pe, node_events qe
 WHERE p.period = q.period AND p.producer_id = q.producer_id
   AND pe.event_id = p.event_id AND qe.event_id = q.event_id AND pe.sequence < qe.sequence;
ALTER TABLE production ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS production_period_producer ON production (period, producer_id);

-- People who use the node's web app: clerks draft, officers authorise and act, auditors read.
CREATE TABLE IF NOT EXISTS web_users (
    username      text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role          text NOT NULL CHECK (role IN ('clerk', 'officer', 'auditor')),
    full_name     text NOT NULL DEFAULT '',
    password_hash text NOT NULL,            -- argon2id
    active        boolean NOT NULL DEFAULT true,
    -- Sessions signed in before this are no longer honoured (sign-out, password reset).
    sessions_after timestamptz NOT NULL DEFAULT '-infinity',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens of national systems; only a SHA-256 digest is kept. Revoked, never deleted.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id   bigserial PRIMARY KEY,
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('officer', 'auditor')),
    digest     text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- A clerk's (or officer's) draft of an issue: an event only once an officer authorises it.
CREATE TABLE IF NOT EXISTS drafts (
    draft_id       bigserial PRIMARY KEY,
    operation      jsonb NOT NULL,
    drafted_by     text NOT NULL,
    drafted_at     timestamptz NOT NULL DEFAULT now(),
    state          text NOT NULL DEFAULT 'DRAFT' CHECK (state IN ('DRAFT', 'AUTHORISED', 'DISCARDED')),
    authorised_by  text,
    authorised_at  timestamptz,
    certificate_id text
);

-- Who did what, when and from where: every act of the web app and the API.
CREATE TABLE IF NOT EXISTS audit_log (
    audit_id bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,                 -- user:<name> or token:<name>
    role     text NOT NULL DEFAULT '',
    address  text NOT NULL DEFAULT '',
    action   text NOT NULL,
    subject  text NOT NULL DEFAULT '',      -- a certificate id, draft:<n>, period/producer
    detail   text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_log_subject ON audit_log (subject, audit_id);

-- The key that signs the web app's session cookies (one row, made on first start).
CREATE TABLE IF NOT EXISTS web_secret (
    id     integer PRIMARY KEY CHECK (id = 1),
    secret bytea NOT NULL
);

-- The certificate list pages newest first.
CREATE INDEX IF NOT EXISTS certificates_newest ON certificates (created_at DESC, certificate_id DESC);
