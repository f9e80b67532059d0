"""Out-of-order arrival, sequence gaps, hostile input, participants, queries and dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from support import reference
from support.registry import (
    Env,
    certificate,
    confirmation,
    issuance,
    running_env,
    snapshot,
    voiding,
    wait_until,
)

from exchange.adapters.postgres import connect, transaction
from exchange.domain.events import Outcome, ParticipantStatus, StatusChange
from exchange.registry import deadstore, participant, policy, queries, reinjection
from exchange.wire import topology
from exchange.wire.codec import MAGIC


@pytest.fixture(scope="module")
def env(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running_env(make_session_vhost, make_session_database)


_serial = iter(range(500_000, 1_000_000))


def fresh(member: str = "BW", **changes: Any) -> Any:
    return certificate(member, next(_serial), **changes)


def state_tables(env: Env) -> dict[str, Any]:
    shot = snapshot(env)
    shot.pop("events")
    return shot


def test_an_early_import_confirmation_is_matched_by_the_late_certificate(env: Env) -> None:
    cert = fresh()
    conf = env.producers.seal("ZA", confirmation(cert))
    env.publisher.send(conf)
    assert env.decision_for("ZA", conf.event_id).decision is Outcome.ACCEPTED
    rows = env.query(
        "SELECT matched FROM import_confirmations WHERE event_id = %s", (conf.event_id,)
    )
    assert rows == [{"matched": False}]
    issued = env.producers.seal("BW", issuance(cert))
    env.publisher.send(issued)
    assert env.decision_for("BW", issued.event_id).decision is Outcome.ACCEPTED
    rows = env.query(
        "SELECT matched FROM import_confirmations WHERE event_id = %s", (conf.event_id,)
    )
    assert rows == [{"matched": True}]
    state = env.query(
        "SELECT state FROM certificates WHERE certificate_id = %s", (cert.certificate_id,)
    )
    assert state == [{"state": "IMPORT_CONFIRMED"}]


def test_a_sequence_gap_is_opened_then_closed_and_an_early_void_is_held(env: Env) -> None:
    cert = fresh("NA")
    issued = env.producers.seal("NA", issuance(cert))
    voided = env.producers.seal("NA", voiding(cert))
    env.publisher.send(voided)  # arrives first: NA's previous sequence number is missing
    gap = "SELECT filled_at FROM sequence_gaps WHERE producer = 'NA' AND sequence = %s"
    wait_until(lambda: env.query(gap, (issued.sequence,)), what="gap opened")
    assert env.query(gap, (issued.sequence,))[0]["filled_at"] is None
    held = env.query("SELECT decision FROM event_log WHERE event_id = %s", (voided.event_id,))
    assert held == [{"decision": "HELD"}]
    env.publisher.send(issued)
    assert env.decision_for("NA", issued.event_id).decision is Outcome.ACCEPTED
    assert env.decision_for("NA", voided.event_id).decision is Outcome.ACCEPTED
    assert env.query(gap, (issued.sequence,))[0]["filled_at"] is not None
    state = env.query(
        "SELECT state FROM certificates WHERE certificate_id = %s", (cert.certificate_id,)
    )
    assert state == [{"state": "VOIDED"}]


def test_hostile_messages_change_no_state_and_do_not_stop_the_consumer(env: Env) -> None:
    wait_until(lambda: _idle(env), what="registry idle")
    before = state_tables(env)
    good = env.producers.seal("BW", issuance(fresh()))
    forged = good.body[:-1] + bytes([good.body[-1] ^ 0x55])
    impostor = env.producers.seal("BW", issuance(fresh()), signer=env.producers.signers["ZA"])
    env.publisher.raw(env.user("BW"), "BW.CertificateIssued", forged, message_id=good.event_id)
    env.publisher.raw(env.user("ZA"), "ZA.CertificateIssued", impostor.body)
    env.publisher.send(impostor)  # as BW, but signed with ZA's key
    env.publisher.raw(env.user("BW"), "BW.CertificateIssued", MAGIC + b"\x09" * 8 + b"x")
    env.publisher.raw(env.user("ZA"), "ZA.ImportConfirmed", bytes(range(256)))
    wait_until(lambda: _idle(env), what="hostile messages decided")
    assert state_tables(env) == before
    env.publisher.send(good)  # the genuine event with the forged copy's id still lands
    wait_until(
        lambda: any(
            kind == "RegistryDecision"
            and p.subject_event_id == good.event_id
            and p.decision is Outcome.ACCEPTED
            for kind, p in env.messages("BW")
        ),
        what="the genuine event accepted",
    )


def _idle(env: Env) -> bool:
    from exchange.adapters.management import Admin

    admin = Admin(env.admin_url)
    try:
        queue = {q["name"]: q for q in admin.queues(env.vhost)}["kpx.registry"]
        return bool(queue.get("messages", 1) == 0)
    finally:
        admin.close()


def test_suspending_a_participant_tells_every_node_and_rejects_its_certificates(
    env: Env,
) -> None:
    conn = connect(env.dsn)
    try:
        status = participant.change_status(
            conn,
            env.producers.store,
            env.registry_signer,
            env.region,
            "suspend",
            "NA",
            "monitoring mission",
            date(2026, 3, 1),
        )
        assert status == "SUSPENDED"
        for node in ("BW", "ZA", "EU"):
            wait_until(
                lambda node=node: _notice(env, node, ParticipantStatus.SUSPENDED),
                what=f"status notice at {node}",
            )
        to_na = env.producers.seal("BW", issuance(fresh(destination="NA")))
        env.publisher.send(to_na)
        decision = env.decision_for("BW", to_na.event_id)
        assert decision.reason == "PARTICIPANT_SUSPENDED"
        participant.change_status(
            conn,
            env.producers.store,
            env.registry_signer,
            env.region,
            "reinstate",
            "NA",
            "mission done",
            date(2026, 3, 5),
        )
        again = env.producers.seal("BW", issuance(fresh(destination="NA")))
        env.publisher.send(again)
        assert env.decision_for("BW", again.event_id).decision is Outcome.ACCEPTED
    finally:
        conn.close()


def _notice(env: Env, node: str, status: ParticipantStatus) -> bool:
    return any(
        isinstance(p, StatusChange) and p.participant == "NA" and p.status is status
        for _, p in env.messages(node)
    )


def test_show_verify_and_rejections(env: Env) -> None:
    cert, voided_cert = fresh(), fresh()
    for sealed in (
        env.producers.seal("BW", issuance(cert)),
        env.producers.seal("BW", issuance(voided_cert)),
        env.producers.seal("BW", voiding(voided_cert)),
    ):
        env.publisher.send(sealed)
        assert env.decision_for("BW", sealed.event_id).decision is Outcome.ACCEPTED
    conn = connect(env.dsn)
    try:
        shown = queries.show(conn, cert.certificate_id)
        assert shown["state"] == "ISSUED" and shown["certificate"] == cert.to_json()
        assert [d["decision"] for d in shown["decisions"]] == ["ACCEPTED"]
        ok, sentence = queries.verify(conn, cert.certificate_id, "XS", date(2026, 3, 5))
        assert ok and "Valid" in sentence
        ok, sentence = queries.verify(conn, cert.certificate_id, "XS", date(2026, 5, 1))
        assert not ok and "expired" in sentence
        ok, sentence = queries.verify(conn, voided_cert.certificate_id, "XS", date(2026, 3, 5))
        assert not ok and "voided" in sentence
        mistyped = cert.certificate_id[:-4] + "9" + cert.certificate_id[-3:]
        ok, sentence = queries.verify(conn, mistyped, "XS", date(2026, 3, 5))
        assert not ok and "check digits" in sentence
        rejected = queries.rejections(conn)
        assert rejected and {"event_id", "producer", "reason", "detail"} <= set(rejected[0])
    finally:
        conn.close()


def stored_dead(env: Env, message_id: str) -> list[dict[str, Any]]:
    """The store's rows of ``message_id`` (the running registry moves dead letters there)."""
    return env.query(
        "SELECT id, reason, routing_key, failed_queue, status, times_dead, reinjected_by "
        "FROM dead_letters WHERE message_id = %s",
        (message_id,),
    )


def test_dead_letters_are_stored_listed_and_can_be_reinjected(env: Env) -> None:
    message_id = "5b0c2f4e-0000-4000-8000-00000000dead"
    env.publisher.raw(
        env.user("AE"), "AE.ImportConfirmed", b"not avro at all", message_id=message_id
    )
    wait_until(lambda: bool(stored_dead(env, message_id)), what="dead letter stored")
    conn = connect(env.dsn)
    try:
        with transaction(conn) as cur:
            listed = [
                d for d in deadstore.page(cur, deadstore.Filter(limit=10_000))
                if d.message_id == message_id
            ]  # fmt: skip
        assert listed[0].routing_key == "AE.ImportConfirmed"
        assert listed[0].failed_queue == "kpx.registry"
        assert listed[0].reason.startswith("SCHEMA_INVALID")
        user = topology.registry_user(env.vhost)
        done = reinjection.reinject(conn, env.registry_url, user, "ops", {message_id})
        assert done.reinjected == (message_id,)
        # Still unreadable: decided again, set aside again, the same row dead twice now.
        wait_until(
            lambda: stored_dead(env, message_id)[0]["times_dead"] == 2,
            what="dead letter back after re-injection",
        )
        [row] = stored_dead(env, message_id)
        assert (row["status"], row["reinjected_by"]) == ("pending", "ops")
    finally:
        conn.close()


def test_a_message_that_crashes_the_handler_is_dead_lettered_and_the_rest_recorded(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim, other = fresh(), fresh()
    real = policy.decide

    def decide(event: Any, view: Any, ctx: Any) -> Any:
        if event.certificate_id == victim.certificate_id:
            raise RuntimeError("a bug")
        return real(event, view, ctx)

    monkeypatch.setattr(policy, "decide", decide)
    bad = env.producers.seal("BW", issuance(victim))
    good = env.producers.seal("BW", issuance(other))
    env.publisher.send(bad)
    env.publisher.send(good)
    assert env.decision_for("BW", good.event_id).decision is Outcome.ACCEPTED
    wait_until(
        lambda: any("a bug" in d["reason"] for d in stored_dead(env, bad.event_id)),
        what="the culprit dead-lettered",
    )


def test_the_fast_certificate_json_equals_certificate_to_json() -> None:
    cert = fresh()
    assert reference.certificate_json(cert.to_record()) == cert.to_json()
