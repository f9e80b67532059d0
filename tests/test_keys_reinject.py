"""Re-injecting a dead letter puts it back where it failed (issue 11 item 1).

A reconciler's dead letter re-injected into ``kpx.events`` reached the registry, which dropped
it as a duplicate: the reconciler never saw the event again. Now ``x-kpx-queue`` (set by the
consumer that dead-lettered it) names the way back.
"""

from __future__ import annotations

from typing import Any

import pika
import pytest
from support.registry import Env, make_env

from exchange.adapters.postgres import connect
from exchange.registry import deadletters, deadmover, reinjection
from exchange.wire import topology


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Env:
    vhost, database = make_vhost(), make_database()
    return make_env(vhost.name, vhost.amqp_url, database.url)


def dead_letter(env: Env, queue: str, routing_key: str, message_id: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(env.admin_url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        headers = {"x-kpx-reason": "KeyNotYetKnown", "x-kpx-queue": queue,
                   "x-kpx-routing-key": routing_key}  # fmt: skip
        props = pika.BasicProperties(message_id=message_id, headers=headers, delivery_mode=2)
        channel.basic_publish(topology.DEAD, routing_key, b"body-" + message_id.encode(), props)
    finally:
        conn.close()


def take(env: Env, queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(pika.URLParameters(env.admin_url))
    found = []
    try:
        channel = conn.channel()
        while True:
            method, _props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return found
            found.append(body)
    finally:
        conn.close()


def test_a_dead_letter_goes_back_to_the_queue_it_failed_in(env: Env) -> None:
    dead_letter(env, topology.RECONCILER_QUEUE, "BW.CertificateIssued", "r-1")
    dead_letter(env, topology.REGISTRY_QUEUE, "BW.CertificateIssued", "g-1")
    dead_letter(env, topology.node_queue("ZA"), "ZA.RegistryDecision", "n-1")
    user = topology.registry_user(env.vhost)
    conn = connect(env.dsn)
    try:
        assert deadmover.move_waiting(conn, env.registry_url) == 3
        assert take(env, topology.DEAD_QUEUE) == []  # moved into the store
        done = reinjection.reinject(conn, env.registry_url, user, "test", None)
    finally:
        conn.close()
    assert done.reinjected == ("g-1", "n-1", "r-1") and done.rows == 3
    assert take(env, topology.RECONCILER_QUEUE) == [b"body-r-1"]
    assert take(env, topology.REGISTRY_QUEUE) == [b"body-g-1"]
    assert take(env, topology.node_queue("ZA")) == [b"body-n-1"]
    rows = env.query("SELECT status, reinjected_by FROM dead_letters")
    assert rows == [{"status": "reinjected", "reinjected_by": "test"}] * 3


def test_the_way_back_is_named_by_the_failing_queue() -> None:
    assert deadletters.failed_at(b"kpx.reconciler") == topology.ACCEPTED
    assert deadletters.failed_at("kpx.node.BW") == topology.NOTIFY
    assert deadletters.failed_at(None) == topology.EVENTS
