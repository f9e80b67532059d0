-- Issue 15: the portal caches the facts of certificates it has looked up (web/verifycache.py)
-- and must hear of every change to them. The database announces them itself, so no writer
-- (the registry, a reinjection, an operator in psql) can forget to: every statement that
-- changes a certificate or an import confirmation sends, on channel kpx_verify, the ids it
-- touched, space-separated. NOTIFY is delivered at commit and only then, so nothing
-- uncommitted is ever announced, and a rolled-back change announces nothing.
--
-- Statement-level triggers with transition tables: one announcement per statement (the
-- registry writes a batch in one statement), not one per row. A payload must stay under
-- 8000 bytes: the ids go in chunks of at most ~7,600 bytes. An id too long to be a number
-- (DESIGN §3: at most 40 characters; more than 100 bytes here) is announced as '*', which
-- clears the whole cache: the portal never caches such an id, but '*' is always safe.
--
-- Inserted certificates are not announced: the portal caches only numbers it found, so a new
-- number was never cached (its UNKNOWN answer always goes to the database). Inserted,
-- changed or deleted confirmations are (the first one is the ALREADY_IMPORTED fact); so are
-- changed and deleted certificates (state, replaced_by, dates, parcels, carats), and a
-- TRUNCATE of either table clears everything.

CREATE OR REPLACE FUNCTION kpx_verify_announce(ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
BEGIN
    FOR chunk IN
        SELECT string_agg(id, ' ')
        FROM (SELECT id, sum(octet_length(id) + 1) OVER (ORDER BY id) AS upto
              FROM (SELECT DISTINCT CASE WHEN octet_length(i) <= 100 THEN i ELSE '*' END AS id
                    FROM unnest(ids) AS u(i)) d) s
        -- Each chunk holds the ids whose running total ends in one 7,500-byte stretch: at
        -- most 7,500 bytes plus the one id (≤ 100 bytes) that began in the stretch before.
        GROUP BY upto / 7500
    LOOP
        PERFORM pg_notify('kpx_verify', chunk);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION kpx_verify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Each branch names only the transition tables its trigger declares.
    IF TG_OP = 'INSERT' THEN
        PERFORM kpx_verify_announce(ARRAY(SELECT certificate_id FROM changed));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM kpx_verify_announce(ARRAY(SELECT certificate_id FROM changed
                                          UNION SELECT certificate_id FROM gone));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM kpx_verify_announce(ARRAY(SELECT certificate_id FROM gone));
    ELSE  -- TRUNCATE: no rows to name
        PERFORM pg_notify('kpx_verify', '*');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER certificates_verify_update AFTER UPDATE ON certificates
    REFERENCING OLD TABLE AS gone NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();
CREATE TRIGGER certificates_verify_delete AFTER DELETE ON certificates
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();
CREATE TRIGGER certificates_verify_truncate AFTER TRUNCATE ON certificates
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();

CREATE TRIGGER confirmations_verify_insert AFTER INSERT ON import_confirmations
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();
CREATE TRIGGER confirmations_verify_update AFTER UPDATE ON import_confirmations
    REFERENCING OLD TABLE AS gone NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();
CREATE TRIGGER confirmations_verify_delete AFTER DELETE ON import_confirmations
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();
CREATE TRIGGER confirmations_verify_truncate AFTER TRUNCATE ON import_confirmations
    FOR EACH STATEMENT EXECUTE FUNCTION kpx_verify_changed();
