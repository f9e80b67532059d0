"""Dead letters as values: what a message of ``kpx.registry.dead`` says, and where it goes back.

A consumer that cannot take a message (exchange/messaging/consumer.py) sets it aside on
``kpx.dead`` with the headers ``x-kpx-reason``, ``x-kpx-queue`` (the queue it failed in) and
``x-kpx-routing-key``; the broker's own dead-lettering (a delivery limit reached) says the
same in ``x-first-death-queue`` and ``x-first-death-reason``. :func:`from_message` reads
either into a :class:`DeadLetter`, the row the store keeps (exchange/registry/deadstore.py).

Going back *where it failed*: a registry dead letter to ``kpx.events``, a reconciler's to
``kpx.accepted``, a node inbox's to ``kpx.notify``, under its original routing key. Handing
a reconciler's dead letter to the registry instead only made it a duplicate there, lost to
the reconciler for good (issue 11).

The text is whoever published it wrote: kept exactly (bar NUL, which PostgreSQL text cannot
hold) and escaped only where it is shown (exchange/adapters/terminal.py; Jinja2 on the web).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pika.spec import BasicProperties

from exchange.wire import topology

# A reason longer than this is cut: the consumer writes at most 1,000 characters, the broker
# a word; anything longer was not written by kpx and only fills the table.
MAX_REASON = 2_000


class Status(StrEnum):
    """Where a stored dead letter stands."""

    PENDING = "pending"  # waiting for a fix and a re-injection
    REINJECTED = "reinjected"  # published back where it failed (and not dead again since)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter queue, as the store keeps it."""

    digest: bytes  # identifies the dead copy: the same one delivered twice is one row
    message_id: str | None
    event_id: str | None
    failed_queue: str
    failed_exchange: str
    routing_key: str
    reason: str
    message_type: str | None
    content_type: str | None
    headers: Mapping[str, Any]
    body: bytes


def failed_at(queue: object) -> str:
    """The exchange that feeds the queue a dead letter failed in (kpx.events by default)."""
    name = queue.decode() if isinstance(queue, bytes) else str(queue or "")
    if name == topology.RECONCILER_QUEUE:
        return topology.ACCEPTED
    if name.startswith(topology.node_queue("")):
        return topology.NOTIFY
    return topology.EVENTS


def from_message(routing_key: str, props: BasicProperties, body: bytes) -> DeadLetter:
    """The dead letter a message of the dead-letter queue is (``routing_key``: the one it came
    with). Never raises on what a publisher wrote: every field is made storable."""
    headers = props.headers or {}
    queue = _text(headers.get("x-kpx-queue") or headers.get("x-first-death-queue") or "")
    key = _text(headers.get("x-kpx-routing-key") or routing_key)
    reason = headers.get("x-kpx-reason")
    if reason is None:  # dead-lettered by the broker itself, e.g. its delivery limit
        why = _text(headers.get("x-first-death-reason") or "unknown")
        reason = f"BROKER_{why.upper()}: dead-lettered by the broker from {queue or '?'}"
    message_id = _text(props.message_id) if props.message_id is not None else None
    digest = hashlib.sha256()
    for part in (queue, key, message_id or ""):
        digest.update(part.encode() + b"\x00")
    digest.update(body)
    return DeadLetter(
        digest=digest.digest(),
        message_id=message_id,
        event_id=_uuid(message_id),
        failed_queue=queue or topology.REGISTRY_QUEUE,
        failed_exchange=failed_at(queue),
        routing_key=key,
        reason=_text(reason)[:MAX_REASON],
        message_type=_text(props.type) if props.type is not None else None,
        content_type=_text(props.content_type) if props.content_type is not None else None,
        headers={str(k): _json_safe(v) for k, v in headers.items()},
        body=bytes(body),
    )


def publish_headers(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The headers a re-injected message carries: the publisher's own, none of the ``x-``
    ones that described its death, and ``x-kpx-reinjected`` (for the logs of the receiver)."""
    headers = {k: v for k, v in stored.items() if not k.startswith("x-")}
    headers["x-kpx-reinjected"] = 1
    return headers


def _uuid(value: str | None) -> str | None:
    try:
        return str(uuid.UUID(value)) if value else None
    except ValueError:
        return None


def _text(value: object) -> str:
    """``value`` as text PostgreSQL can hold: bytes decoded (bad UTF-8 replaced), NUL shown."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "\\x00")


def _json_safe(value: object) -> Any:
    """An AMQP header value as JSON: tables and arrays kept, bytes and dates as text."""
    if isinstance(value, Mapping):
        return {_text(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return _text(value)
