"""Issue 11, item 5, in the one consumer: the event whose data the database refuses is
rejected alone, with the error as its reason, and answered to its producer; the rest of its
batch commits. Identifier bounds keep known poison from SQL (tests/test_hostile_input.py);
this is the net under them, for any other program-limit error (a trigger raises one here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.registry import Env, certificate, issuance, make_env

from exchange.adapters.postgres import connect, transaction
from exchange.domain.events import Outcome


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Iterator[Env]:
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    yield env
    env.publisher.close()


def _refuse_certificate(dsn: str, certificate_id: str) -> None:
    """Make the registry's database refuse one certificate's row as too large (54000)."""
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "CREATE FUNCTION kpxt_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.certificate_id = '{certificate_id}' THEN"
                " RAISE EXCEPTION 'index row too large' USING ERRCODE = '54000'; END IF;"
                " RETURN NEW; END $$"
            )
            cur.execute(
                "CREATE TRIGGER kpxt_refuse BEFORE INSERT ON certificates"
                " FOR EACH ROW EXECUTE FUNCTION kpxt_refuse()"
            )
    finally:
        conn.close()


def test_the_event_the_database_refuses_is_rejected_and_answered_and_the_rest_commit(
    env: Env,
) -> None:
    running = env.run_registry()
    try:
        p = env.producers
        first = p.seal("BW", issuance(certificate("BW", 1)))
        env.publisher.send(first)  # the registry has migrated once this is decided
        assert env.decision_for("BW", first.event_id).decision is Outcome.ACCEPTED
        poison_cert = certificate("BW", 2)
        _refuse_certificate(env.dsn, poison_cert.certificate_id)
        poison = p.seal("BW", issuance(poison_cert))
        good = [p.seal("BW", issuance(certificate("BW", 3 + n))) for n in range(3)]
        for sealed in (poison, *good):
            env.publisher.send(sealed)
        told = env.decision_for("BW", poison.event_id)
        assert told.decision is Outcome.REJECTED
        assert told.reason == "SCHEMA_INVALID"
        assert "index row too large" in told.detail
        for sealed in good:
            assert env.decision_for("BW", sealed.event_id).decision is Outcome.ACCEPTED
        rows = env.query(
            "SELECT decision, reason FROM event_log WHERE event_id = %s", (poison.event_id,)
        )
        assert rows == [{"decision": "REJECTED", "reason": "SCHEMA_INVALID"}]
    finally:
        running.stop()
