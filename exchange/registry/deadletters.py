"""The dead-letter queue ``kpx.registry.dead``: list it, and re-inject messages after a fix.

Listing takes every message without acknowledging it and closes the channel, which returns
them all to the queue: nothing is consumed for good. Re-injecting publishes the chosen
messages back *where they failed* (the ``x-kpx-queue`` header the consumer set): a registry
dead letter to ``kpx.events``, a reconciler's to ``kpx.accepted``, a node inbox's to
``kpx.notify`` — under their original routing key, as the registry's own broker user (the
ingest then trusts the envelope's producer, proven by its signature). Handing a reconciler's
dead letter to the registry instead only made it a duplicate there, lost to the reconciler
for good (issue 11). It waits for the broker's confirm, and only then acks the dead copy; the
others go back to the queue.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import pika
from pika.spec import BasicProperties

from exchange.adapters.rabbitmq import blocking_connection, translated
from exchange.wire import topology


def _routing_key(method: Any, props: BasicProperties) -> str:
    """The routing key the message had before it was dead-lettered."""
    key = (props.headers or {}).get("x-kpx-routing-key") or method.routing_key
    return key.decode() if isinstance(key, bytes) else str(key)


def _describe(method: Any, props: BasicProperties, body: bytes) -> dict[str, Any]:
    """The dead letter as stored: its text is whoever published it wrote, shown escaped by
    the terminal boundary (exchange/adapters/terminal.py), exact in ``--json``."""
    headers = props.headers or {}
    reason = headers.get("x-kpx-reason", "")
    return {
        "message_id": props.message_id,
        "reason": reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason),
        "routing_key": _routing_key(method, props),
        "type": props.type,
        "size": len(body),
    }


# Messages in flight to the lister: one basic_get round trip per message made listing 15,000
# take 25 s, and re-injecting one id scan the whole queue that way.
_PREFETCH = 1_000


def _scan(channel: Any) -> Iterator[tuple[Any, BasicProperties, bytes]]:
    """Every message of the dead-letter queue once, unacknowledged, in queue order.

    Consumes with a prefetch window and stops after the number of messages the queue held
    when the scan began (messages returned by the scan itself are not read twice).
    """
    declared = channel.queue_declare(topology.DEAD_QUEUE, passive=True)
    total = declared.method.message_count
    if not total:
        return
    channel.basic_qos(prefetch_count=min(total, _PREFETCH))
    messages = channel.consume(topology.DEAD_QUEUE, auto_ack=False, inactivity_timeout=2.0)
    for seen, (method, props, body) in enumerate(messages, start=1):
        if method is None:
            break
        yield method, props, body
        if seen >= total:
            break
    channel.cancel()


def list_dead(amqp_url: str) -> list[dict[str, Any]]:
    """Every dead letter (reason, routing key, message id, size), left in the queue.

    Raises BrokerUnavailable or BrokerRefused.
    """
    conn = blocking_connection(amqp_url, name="registry-dead-letters")
    found: list[dict[str, Any]] = []
    try:
        with translated("listing dead letters"):
            channel = conn.channel()
            for method, props, body in _scan(channel):
                found.append(_describe(method, props, body))
            channel.close()  # returns every unacked message to the queue
    finally:
        if conn.is_open:
            conn.close()
    return found


def reinject(amqp_url: str, user: str, message_ids: Collection[str] | None = None) -> int:
    """Re-publish dead letters (all when ``message_ids`` is None) where they failed; how many.

    ``user`` is the broker user of ``amqp_url`` (the registry's), set as ``user_id``. Raises
    BrokerUnavailable or BrokerRefused; a message whose publish is not confirmed stays dead.
    """
    conn = blocking_connection(amqp_url, name="registry-reinject")
    count = 0
    try:
        with translated("re-injecting dead letters"):
            channel, publish = conn.channel(), conn.channel()
            publish.confirm_delivery()
            wanted = None if message_ids is None else set(message_ids)
            for method, props, body in _scan(channel):
                if wanted is not None:
                    if props.message_id not in wanted:
                        continue  # left unacked: back to the queue when the channel closes
                    wanted.discard(props.message_id)
                target = failed_at((props.headers or {}).get("x-kpx-queue"))
                try:
                    publish.basic_publish(
                        target, _routing_key(method, props), body, _props(props, user), True
                    )
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                    continue  # not confirmed: the dead copy stays in the queue
                channel.basic_ack(method.delivery_tag)
                count += 1
                if wanted is not None and not wanted:
                    break  # every chosen id found: the rest of the queue is not read
            channel.close()
    finally:
        if conn.is_open:
            conn.close()
    return count


def failed_at(queue: object) -> str:
    """The exchange that feeds the queue a dead letter failed in (kpx.events by default)."""
    name = queue.decode() if isinstance(queue, bytes) else str(queue or "")
    if name == topology.RECONCILER_QUEUE:
        return topology.ACCEPTED
    if name.startswith(topology.node_queue("")):
        return topology.NOTIFY
    return topology.EVENTS


def _props(props: BasicProperties, user: str) -> BasicProperties:
    headers = {k: v for k, v in (props.headers or {}).items() if not str(k).startswith("x-")}
    headers["x-kpx-reinjected"] = 1
    return BasicProperties(
        message_id=props.message_id,
        type=props.type,
        user_id=user,
        content_type=props.content_type,
        delivery_mode=2,
        headers=headers,
    )
