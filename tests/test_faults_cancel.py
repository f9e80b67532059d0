"""Issue 11, item 4: a void reaches the destination. Before: the importer kept listing a
voided certificate as expected. Now the registry sends ``ShipmentCancelled`` (DESIGN §4) to
the destination of an announced certificate it voids (inside its batch's ``ShipmentNotices``),
and the node's inbox withdraws it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest
from support.registry import Env, as_user, certificate, issuance, running_env, voiding
from support.services import Database

from exchange.adapters.postgres import Connection, connect, transaction
from exchange.adapters.rabbitmq import Delivery
from exchange.domain.events import Outcome, each_event
from exchange.wire import topology
from exchange.wire.envelope import Envelope, open_envelope
from exchange.wire.signing import Keyring
from nodes import store
from nodes.inbox import Inbox
from nodes.service import migrate


@pytest.fixture(scope="module")
def env(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running_env(make_session_vhost, make_session_database)


def _take(env: Env, node: str, count: int) -> list[Delivery]:
    """``count`` messages of ``kpx.node.<node>`` (waits for them), consumed."""
    url = as_user(env.admin_url, env.user(node))
    conn = pika.BlockingConnection(pika.URLParameters(url))
    taken: list[Delivery] = []
    try:
        channel = conn.channel()
        for method, props, body in channel.consume(
            topology.node_queue(node), auto_ack=True, inactivity_timeout=20
        ):
            if method is None:
                break
            taken.append(Delivery(len(taken) + 1, method.routing_key, props, body, False))
            if len(taken) == count:
                break
        channel.cancel()
    finally:
        conn.close()
    return taken


def test_a_void_withdraws_the_shipment_the_destination_expects(
    env: Env, database: Database
) -> None:
    cert = certificate("BW", 41, destination="ZA")
    issued = env.producers.seal("BW", issuance(cert))
    env.publisher.send(issued)
    assert env.decision_for("BW", issued.event_id).decision is Outcome.ACCEPTED
    voided = env.producers.seal("BW", voiding(cert))
    env.publisher.send(voided)
    assert env.decision_for("BW", voided.event_id).decision is Outcome.ACCEPTED
    notices = _take(env, "ZA", 2)  # two batches, so two ShipmentNotices messages
    assert [d.routing_key for d in notices] == ["ZA.ShipmentNotices"] * 2
    carried = [each_event(e.event_type, e.payload) for e in _opened(env, notices)]
    assert [[kind for kind, _ in events] for events in carried] == [
        ["ShipmentExpected"],
        ["ShipmentCancelled"],
    ]
    migrate(database.url)
    conn = connect(database.url)
    try:
        keyring = Keyring([env.registry_signer.verify_key])
        inbox = Inbox("ZA", env.producers.store, keyring, frozenset({"XS"}))
        _apply(inbox, conn, notices[:1])
        with transaction(conn) as cur:
            expected = [s["certificate_id"] for s in store.expected_shipments(cur)]
        assert expected == [cert.certificate_id]
        _apply(inbox, conn, notices[1:])
        with transaction(conn) as cur:
            assert store.expected_shipments(cur) == []
    finally:
        conn.close()


def _opened(env: Env, deliveries: list[Delivery]) -> list[Envelope]:
    keyring = Keyring([env.registry_signer.verify_key])
    return [open_envelope(env.producers.store, keyring, d.body) for d in deliveries]


def _apply(inbox: Inbox, conn: Connection, deliveries: list[Delivery]) -> None:
    """What the consumer does with a batch: decode each delivery, record them in one go."""
    items = [item for d in deliveries if (item := inbox.decode(d).item) is not None]
    assert len(items) == len(deliveries)
    with transaction(conn) as cur:
        inbox.record(cur, items)
