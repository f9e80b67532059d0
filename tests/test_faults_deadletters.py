"""Issue 11, item 10: the dead-letter queue cannot be forged into, is bounded, is watched, and
its reasons reach the terminal with control characters escaped.

Before: any node could publish into ``kpx.dead`` (forged reasons and routing keys that the
registry would re-inject as its own broker user), the queue had no length limit, ``kpx
check`` ignored it, and raw terminal escape codes in a reason reached the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
from pika.spec import BasicProperties
from support.registry import Env, as_user, make_env, wait_until

from exchange.adapters.management import Admin
from exchange.adapters.postgres import connect, transaction
from exchange.adapters.terminal import escape
from exchange.app.quiescence import dead_letter_problems
from exchange.registry import deadmover, deadstore
from exchange.wire import topology


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Iterator[Env]:
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    yield env
    env.publisher.close()


def _publish(url: str, exchange: str, body: bytes, headers: dict[str, Any]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        props = BasicProperties(message_id="m-1", headers=headers, delivery_mode=2)
        channel.basic_publish(exchange, "BW.CertificateIssued", body, props)
    finally:
        if conn.is_open:
            conn.close()


def test_a_node_cannot_publish_into_the_registrys_dead_letter_exchange(env: Env) -> None:
    node = as_user(env.admin_url, env.user("BW"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        _publish(node, topology.DEAD, b"forged", {"x-kpx-reason": "SCHEMA_INVALID: forged"})
    assert refused.value.reply_code == 403
    _publish(node, topology.NODE_DEAD, b"unreadable inbox message", {"x-kpx-reason": "x"})


def test_the_dead_letter_queues_have_a_length_limit(env: Env) -> None:
    admin = Admin(env.admin_url)
    try:
        for queue in topology.DEAD_QUEUES:
            path = f"/queues/{quote(env.vhost, safe='')}/{quote(queue, safe='')}"
            wait_until(
                lambda p=path: (
                    (admin.get(p).get("effective_policy_definition") or {}).get("max-length")
                    == topology.DEAD_LIMIT
                ),
                what=f"the length limit on {queue}",
            )
    finally:
        admin.close()


def test_control_characters_in_a_reason_are_escaped_when_listed(env: Env) -> None:
    registry = as_user(env.admin_url, topology.registry_user(env.vhost))
    evil = "SCHEMA_INVALID: \x1b[2J\x1b]0;owned\x07 gone"
    _publish(registry, topology.DEAD, b"body", {"x-kpx-reason": evil, "x-kpx-routing-key": "B\rW"})
    conn = connect(env.dsn)
    try:
        assert deadmover.move_waiting(conn, registry) == 1
        with transaction(conn) as cur:
            [listed] = deadstore.page(cur, deadstore.Filter())
    finally:
        conn.close()
    # Listed exactly (--json says it as it is); the terminal boundary escapes what is shown
    # (main's exchange/adapters/terminal.py, which every command's output passes).
    assert listed.reason == evil and listed.routing_key == "B\rW"
    shown = escape(f"{listed.reason} {listed.routing_key}")
    assert not any(c in shown for c in "\x1b\x07\r")


def test_kpx_check_reports_a_dead_letter_queue_near_its_limit() -> None:
    near = int(topology.DEAD_LIMIT * 0.8)
    queues = [
        {"name": topology.DEAD_QUEUE, "messages": near - 1},
        {"name": topology.NODE_DEAD_QUEUE, "messages": near},
        {"name": topology.REGISTRY_QUEUE, "messages": 10**6},
    ]
    [problem] = dead_letter_problems(queues)
    assert problem.startswith(f"queue {topology.NODE_DEAD_QUEUE} holds 80,000 dead letters")
