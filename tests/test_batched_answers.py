"""Answers in batches, each signed once (issue 13, item 3).

Per registry batch the registry sends one ``RegistryDecisions`` per producer, one
``ShipmentNotices`` per destination and one ``AcceptedEvents`` for the reconciler, each
signed once; each decision names its leaf index in the registry's log. The node inbox
verifies each message once and applies its answers in bulk, the reconciler verifies the
registry's signature and records the events inside without verifying them again. All on the
real RabbitMQ and PostgreSQL: the registry runs, its relay publishes, and the node and
reconciler handlers read what reached their queues.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pika
import pytest
from support.registry import (
    Env,
    as_user,
    certificate,
    decided_count,
    depth,
    issuance,
    make_env,
    wait_until,
)
from support.services import Database

from exchange.adapters.postgres import Connection, connect, fetch_all, transaction
from exchange.adapters.rabbitmq import Delivery
from exchange.domain.events import DecisionBatch, Outcome
from exchange.reconciler import service as reconciler
from exchange.registry import deadmover, reinjection
from exchange.registry.ingest import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Answers
from exchange.tlog import checkpoint, note
from exchange.wire import topology
from exchange.wire.codec import SchemaStore, default_schemas_dir, default_store
from exchange.wire.envelope import MAX_EVENT_BYTES, open_envelope, seal
from exchange.wire.signing import Keyring, Signer, generate_key
from nodes import store
from nodes.inbox import Inbox
from nodes.service import migrate

N = 20
_serial = iter(range(700_000, 800_000))


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Env:
    """A fresh region per test: the outbox counts below are this test's alone."""
    vhost, database = make_vhost(), make_database()
    return make_env(vhost.name, vhost.amqp_url, database.url)


@contextmanager
def registry(env: Env) -> Iterator[None]:
    """The registry running with its log (so accepted events get leaf indexes), its batches
    lingering until the queued backlog has arrived: one batch takes it all."""
    running = env.run_registry(
        log_signer=note.generate_signer(checkpoint.origin_for("XS")), linger=0.05
    )
    try:
        yield
    finally:
        running.stop()


def decide_in_one_batch(env: Env, count: int) -> list[Any]:
    """``count`` certificates of BW to ZA and one whose totals are wrong (rejected), queued
    while the registry is stopped (so one batch takes them all), then decided; the sealed
    events, the rejected one last."""
    certs = [certificate("BW", next(_serial), destination="ZA") for _ in range(count)]
    certs.append(certificate("BW", next(_serial), total_carats=Decimal("999.00")))
    sent = [env.producers.seal("BW", issuance(c)) for c in certs]
    for s in sent:
        env.publisher.send(s)
    with registry(env):
        wait_until(lambda: decided_count(env) == len(sent), what="the batch decided")
        wait_until(lambda: _unsent(env) == 0, what="the relay published the answers")
    return sent


def _unsent(env: Env) -> int:
    return int(env.query("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")[0]["n"])


def answers(env: Env) -> Counter[tuple[str, str]]:
    """The registry's outbox rows by (event type, routing key), checkpoints left out."""
    rows = env.query(
        "SELECT event_type, routing_key FROM outbox WHERE event_type <> 'LogCheckpoint'"
    )
    return Counter((r["event_type"], r["routing_key"]) for r in rows)


def take(env: Env, queue: str, user: str, kind: str) -> list[Delivery]:
    """Every message of ``kind`` in ``queue`` (read as ``user``); the whole queue consumed."""
    conn = pika.BlockingConnection(pika.URLParameters(as_user(env.admin_url, user)))
    try:
        channel = conn.channel()
        got = [channel.basic_get(queue, auto_ack=True) for _ in range(depth(env, queue))]
    finally:
        conn.close()
    return [
        Delivery(i + 1, method.routing_key, props, body, False)
        for i, (method, props, body) in enumerate(got)
        if props.type == kind
    ]


def node_inbox(env: Env, code: str) -> Inbox:
    return Inbox(code, env.producers.store, Keyring([env.registry_signer.verify_key]),
                 frozenset({"XS"}))  # fmt: skip


@contextmanager
def node_database(database: Database, sent: Sequence[Any] = ()) -> Iterator[Connection]:
    """A node's database, migrated, knowing ``sent`` as its own unanswered events."""
    migrate(database.url)
    conn = connect(database.url)
    try:
        with transaction(conn) as cur:
            rows = [(s.event_id, s.sequence, s.event_type, f"cert-{s.sequence}") for s in sent]
            if rows:
                store.record_events(cur, rows)
        yield conn
    finally:
        conn.close()


def apply(inbox: Inbox, conn: Connection, deliveries: list[Delivery]) -> list[str]:
    """What the consumer does with a batch: decode each delivery, record the readable ones
    in one transaction; the event types applied."""
    items = [item for d in deliveries if (item := inbox.decode(d).item) is not None]
    with transaction(conn) as cur:
        return inbox.record(cur, items)


def states(conn: Connection) -> dict[str, tuple[str, str | None]]:
    rows = fetch_all(conn, "SELECT event_id::text, registry_state, registry_reason "
                           "FROM node_events")  # fmt: skip
    return {r["event_id"]: (r["registry_state"], r["registry_reason"]) for r in rows}


def test_a_batch_from_one_producer_gets_one_signed_message_per_recipient_and_kind(
    env: Env, make_database: Any
) -> None:
    sent = decide_in_one_batch(env, N)
    assert answers(env) == {
        ("RegistryDecisions", "BW.RegistryDecisions"): 1,
        ("ShipmentNotices", "ZA.ShipmentNotices"): 1,
        ("AcceptedEvents", "XS.AcceptedEvents"): 1,
    }
    (batch,) = take(env, topology.node_queue("BW"), env.user("BW"), "RegistryDecisions")
    keyring = Keyring([env.registry_signer.verify_key])
    opened = open_envelope(env.producers.store, keyring, batch.body)
    decisions = {d.subject_event_id: d for d in DecisionBatch.from_record(opened.payload).decisions}
    assert set(decisions) == {s.event_id for s in sent}  # every answer readable on its own
    leaves = {r["event_id"]: r["leaf_index"]
              for r in env.query("SELECT event_id::text, leaf_index FROM log_leaves")}  # fmt: skip
    for s in sent[:-1]:
        assert decisions[s.event_id].decision is Outcome.ACCEPTED
        assert decisions[s.event_id].leaf_index == leaves[s.event_id]
    refused = decisions[sent[-1].event_id]
    assert (refused.decision, refused.leaf_index) == (Outcome.REJECTED, None)

    with node_database(make_database(), sent) as conn:
        applied = apply(node_inbox(env, "BW"), conn, [batch])
        assert applied == ["RegistryDecision"] * (N + 1)
        shown = states(conn)
        assert {shown[s.event_id][0] for s in sent[:-1]} == {"accepted"}
        assert shown[sent[-1].event_id] == ("rejected", refused.reason)
        with transaction(conn) as cur:
            assert store.events_by_state(cur) == {"accepted": N, "rejected": 1}

    (notices,) = take(env, topology.node_queue("ZA"), env.user("ZA"), "ShipmentNotices")
    with node_database(make_database()) as conn:
        assert apply(node_inbox(env, "ZA"), conn, [notices]) == ["ShipmentExpected"] * N
        with transaction(conn) as cur:
            expected = {s["certificate_id"] for s in store.expected_shipments(cur)}
    accepted = env.query("SELECT certificate_id FROM certificates")
    assert expected == {r["certificate_id"] for r in accepted}
    assert len(expected) == N


def test_a_nodes_decisions_reach_its_queue_ahead_of_the_batchs_checkpoint(env: Env) -> None:
    """Checkpoint first, the node verified and cosigned it before it recorded its decisions
    (in a transaction of its own when the decisions were not yet buffered): ~10 ms more."""
    decide_in_one_batch(env, 3)
    rows = env.query("SELECT event_type FROM outbox WHERE routing_key LIKE 'BW.%' ORDER BY id")
    assert [r["event_type"] for r in rows] == ["RegistryDecisions", "LogCheckpoint"]
    queued = take(env, topology.node_queue("BW"), env.user("BW"), "RegistryDecisions")
    assert len(queued) == 1


def test_a_tampered_or_forged_batch_is_set_aside_whole_and_nothing_of_it_applied(
    env: Env, make_database: Any
) -> None:
    sent = decide_in_one_batch(env, 5)
    (batch,) = take(env, topology.node_queue("BW"), env.user("BW"), "RegistryDecisions")
    middle = len(batch.body) // 2
    tampered = batch.body[:middle] + bytes([batch.body[middle] ^ 0x01]) + batch.body[middle + 1 :]
    opened = open_envelope(
        env.producers.store, Keyring([env.registry_signer.verify_key]), batch.body
    )
    impostor = generate_key("XS")  # claims the registry, signs with a key no one registered
    _, forged = seal(env.producers.store, impostor, "RegistryDecisions", opened.payload, 99)
    inbox = node_inbox(env, "BW")
    with node_database(make_database(), sent) as conn:
        for body in (tampered, forged):
            decoded = inbox.decode(
                Delivery(1, "BW.RegistryDecisions", batch.properties, body, False)
            )
            assert decoded.item is None
            assert decoded.dead_letter is not None
            assert decoded.dead_letter.startswith(("BadSignature", "UnknownKey", "Undecodable"))
        assert {state for state, _ in states(conn).values()} == {"pending"}
        assert fetch_all(conn, "SELECT count(*) AS n FROM inbox")[0]["n"] == 0


def test_a_redelivered_batch_is_applied_once(env: Env, make_database: Any) -> None:
    sent = decide_in_one_batch(env, 5)
    (batch,) = take(env, topology.node_queue("BW"), env.user("BW"), "RegistryDecisions")
    (notices,) = take(env, topology.node_queue("ZA"), env.user("ZA"), "ShipmentNotices")
    inbox = node_inbox(env, "BW")
    with node_database(make_database(), sent) as conn:
        assert len(apply(inbox, conn, [batch, batch])) == 6  # twice in one consumer batch
        first = states(conn)
        assert apply(inbox, conn, [batch]) == []  # redelivered after the commit
        assert states(conn) == first
        assert fetch_all(conn, "SELECT count(*) AS n FROM inbox")[0]["n"] == 1
    with node_database(make_database()) as conn:
        za = node_inbox(env, "ZA")
        assert len(apply(za, conn, [notices])) == 5
        assert apply(za, conn, [notices]) == []
        assert fetch_all(conn, "SELECT count(*) AS n FROM expected_shipments")[0]["n"] == 5


def _v2_message(env: Env, event_type: str, record: dict[str, Any], sequence: int) -> Delivery:
    """A single-event answer as the registry wrote it before batching (schemas v2)."""
    v2 = SchemaStore.load(default_schemas_dir() / "released" / "v2")
    _, body = seal(v2, env.registry_signer, event_type, record, sequence)
    props = pika.BasicProperties(type=event_type)
    return Delivery(1, f"BW.{event_type}", props, body, False)


def test_single_answers_queued_before_batching_are_still_applied(
    env: Env, make_database: Any
) -> None:
    sent = decide_in_one_batch(env, 2)
    (batch,) = take(env, topology.node_queue("BW"), env.user("BW"), "RegistryDecisions")
    keyring = Keyring([env.registry_signer.verify_key])
    opened = open_envelope(env.producers.store, keyring, batch.body)
    old = [{k: v for k, v in d.items() if k != "leaf_index"} for d in opened.payload["decisions"]]
    (notices,) = take(env, topology.node_queue("ZA"), env.user("ZA"), "ShipmentNotices")
    shipment = open_envelope(env.producers.store, keyring, notices.body).payload["expected"][0]
    cert_id = shipment["certificate"]["certificate_id"]
    cancelled = {
        "certificate_id": cert_id, "issuing_participant": "XS", "voided_on": date(2026, 3, 1),
        "reason": "withdrawn", "replaced_by": None, "cancelled_at": shipment["accepted_at"],
    }  # fmt: skip
    inbox = node_inbox(env, "BW")
    with node_database(make_database(), sent) as conn:
        singles = [_v2_message(env, "RegistryDecision", d, 1000 + i) for i, d in enumerate(old)]
        assert apply(inbox, conn, singles) == ["RegistryDecision"] * 3
        assert sorted(state for state, _ in states(conn).values()) == ["accepted"] * 2 + [
            "rejected"
        ]
        applied = apply(inbox, conn, [
            _v2_message(env, "ShipmentExpected", shipment, 2000),
            _v2_message(env, "ShipmentCancelled", cancelled, 2001),
        ])  # fmt: skip
        assert applied == ["ShipmentExpected", "ShipmentCancelled"]
        with transaction(conn) as cur:
            assert store.expected_shipments(cur) == []  # announced, then withdrawn
        announced = fetch_all(conn, "SELECT certificate_id FROM expected_shipments")
        assert [r["certificate_id"] for r in announced] == [cert_id]


def _reconciler_keyring(env: Env) -> Keyring:
    return Keyring([env.registry_signer.verify_key, *(s.verify_key for s in
                   env.producers.signers.values())])  # fmt: skip


def _recording(env: Env, keyring: Keyring) -> reconciler.Recording:
    reconciler.prepare(env.dsn)
    signer = generate_key(topology.reconciler_producer(env.region.code))
    return reconciler.Recording(
        reconciler.context(env.region, env.producers.store, signer), env.producers.store, keyring
    )


def _record(env: Env, recording: reconciler.Recording, deliveries: list[Delivery]) -> int:
    items = [item for d in deliveries if (item := recording.decode(d).item) is not None]
    conn = connect(env.dsn)
    try:
        with transaction(conn) as cur:
            return len(recording.record(cur, items).event_types)
    finally:
        conn.close()


def _totals(env: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the registry's, the reconciler's) certificate count, carats and parcel carats."""
    sql = (
        "SELECT (SELECT count(*) FROM {s}certificates) AS n, (SELECT sum(total_carats) "
        "FROM {s}certificates) AS carats, (SELECT sum(carats) FROM {s}parcels) AS parcels"
    )
    return env.query(sql.format(s=""))[0], env.query(sql.format(s="recon."))[0]


def test_the_reconciler_records_a_batch_once_and_its_totals_equal_the_registrys(
    env: Env,
) -> None:
    sent = decide_in_one_batch(env, N)
    user = topology.reconciler_user(env.vhost)
    (batch,) = take(env, topology.RECONCILER_QUEUE, user, "AcceptedEvents")
    recording = _recording(env, _reconciler_keyring(env))
    _record(env, recording, [batch])
    registry_totals, recon_totals = _totals(env)
    assert recon_totals == registry_totals
    assert recon_totals["n"] == N
    _record(env, recording, [batch, batch])  # redelivered, and twice in a batch
    assert _totals(env)[1] == recon_totals
    assert _processed(env) == N

    # An accepted event as it travelled before batching: one node envelope on kpx.accepted.
    late = env.producers.seal("BW", issuance(certificate("BW", next(_serial), destination="ZA")))
    props = pika.BasicProperties(type="CertificateIssued")
    assert _record(env, recording, [Delivery(1, "BW.CertificateIssued", props, late.body, False)])
    assert _processed(env) == N + 1
    assert {r["event_id"] for r in env.query("SELECT event_id::text FROM recon.processed")} == {
        s.event_id for s in [*sent[:-1], late]
    }


def test_only_the_registry_vouches_for_accepted_events(env: Env) -> None:
    """A node's key in the keyring must not let a node wrap events of others."""
    decide_in_one_batch(env, 2)
    user = topology.reconciler_user(env.vhost)
    (batch,) = take(env, topology.RECONCILER_QUEUE, user, "AcceptedEvents")
    keyring = _reconciler_keyring(env)
    payload = open_envelope(env.producers.store, keyring, batch.body).payload
    node_signer: Signer = env.producers.signers["BW"]
    _, forged = seal(env.producers.store, node_signer, "AcceptedEvents", payload, 1)
    recording = _recording(env, keyring)
    decoded = recording.decode(Delivery(1, "BW.AcceptedEvents", batch.properties, forged, False))
    assert decoded.item is None
    assert decoded.dead_letter is not None and "only the registry" in decoded.dead_letter


def test_a_dead_lettered_batch_is_reinjected_and_recorded_once(env: Env) -> None:
    """The reconciler lacked the registry's key: the batch went to kpx.dead whole; once the
    key is there, re-injecting it records every event in it, and a second copy adds none."""
    decide_in_one_batch(env, N)
    reconciler.prepare(env.dsn)
    ctx = reconciler.context(
        env.region, env.producers.store, generate_key(topology.reconciler_producer("XS"))
    )
    url = as_user(env.admin_url, topology.reconciler_user(env.vhost))
    nodes_only = Keyring([s.verify_key for s in env.producers.signers.values()])

    def run(keyring: Keyring, until: Any) -> None:
        consumer = reconciler.Reconciler(env.dsn, url, ctx, env.producers.store, keyring)
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(until, what="the reconciler's work")
        finally:
            stop.set()
            thread.join(timeout=30)

    dead = as_user(env.admin_url, topology.registry_user(env.vhost))

    run(nodes_only, lambda: depth(env, topology.DEAD_QUEUE) == 1)
    assert _processed(env) == 0
    conn = connect(env.dsn)
    try:  # moved into the registry's dead-letter store, then re-injected from it
        assert deadmover.move_waiting(conn, dead) == 1
        user = topology.registry_user(env.vhost)
        assert reinjection.reinject(conn, dead, user, "test", None).rows == 1
    finally:
        conn.close()
    run(_reconciler_keyring(env), lambda: _processed(env) == N)
    registry_totals, recon_totals = _totals(env)
    assert recon_totals == registry_totals

    # A second copy of the same batch (re-injected again by hand) records nothing new.
    (row,) = env.query("SELECT body FROM outbox WHERE event_type = 'AcceptedEvents'")
    admin = pika.BlockingConnection(pika.URLParameters(env.admin_url))
    try:
        channel = admin.channel()
        channel.confirm_delivery()
        props = pika.BasicProperties(type="AcceptedEvents", delivery_mode=2)
        channel.basic_publish(topology.ACCEPTED, "XS.AcceptedEvents", bytes(row["body"]), props)
    finally:
        admin.close()
    run(_reconciler_keyring(env), lambda: depth(env, topology.RECONCILER_QUEUE) == 0)
    assert _processed(env) == N
    assert _totals(env)[1] == recon_totals


def _processed(env: Env) -> int:
    return int(env.query("SELECT count(*) AS n FROM recon.processed")[0]["n"])


def _accepted(size: int) -> SimpleNamespace:
    """What Answers needs of an accepted event: its id and its envelope bytes."""
    return SimpleNamespace(event_id=str(uuid.uuid4()), raw=b"\xc3\x01" + b"e" * (size - 2))


def test_a_batch_of_250_ordinary_events_is_one_message_and_large_ones_split_under_the_bound() -> (
    None
):
    codec = default_store()
    ordinary = [_accepted(3_000) for _ in range(250)]
    (one,) = Answers(accepted=ordinary).messages("XS", {})  # type: ignore[arg-type]
    assert [e["envelope"] for e in one.record["events"]] == [e.raw for e in ordinary]

    largest = [_accepted(MAX_EVENT_BYTES) for _ in range(10)]
    parts = Answers(accepted=largest).messages("XS", {})  # type: ignore[arg-type]
    assert len(parts) == 4  # three 1 MiB events to a message of at most 4 MiB
    carried = [e["envelope"] for p in parts for e in p.record["events"]]
    assert carried == [e.raw for e in largest]  # every event once, in order
    for part in parts:
        assert len(codec.encode(part.event_type, part.record)) <= MAX_BATCH_BYTES

    answers = Answers()
    record = {"subject_event_id": str(uuid.uuid4()), "detail": ""}
    answers.decisions["BW"] = [dict(record) for _ in range(MAX_BATCH_ITEMS + 1)]
    counts = [len(p.record["decisions"]) for p in answers.messages("XS", {})]
    assert counts == [MAX_BATCH_ITEMS, 1]
