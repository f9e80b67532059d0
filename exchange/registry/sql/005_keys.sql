-- DESIGN §15: the registry holds members' PUBLIC keys only, each with its life: when it was
-- registered (by the regional body, or announced by the member's KeyRotated event), and, for a
-- compromised key, the day from which its signatures are refused.
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS valid_from timestamptz;
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS announced_by uuid;      -- KeyRotated event
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS announced_with text;    -- key that signed it
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS announced_at timestamptz; -- its produced_at
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS revoked_from date;
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS revoked_reason text;
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS revoked_at timestamptz;
-- The producer's high-water sequence when the revocation was recorded: a later event under the
-- revoked key is refused whatever date it claims (a thief can write any produced_at).
ALTER TABLE authority_keys ADD COLUMN IF NOT EXISTS revoked_above_sequence bigint;
UPDATE authority_keys SET valid_from = registered_at WHERE valid_from IS NULL;
CREATE INDEX IF NOT EXISTS authority_keys_producer ON authority_keys (producer);
