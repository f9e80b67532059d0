"""Re-inject stored dead letters after a fix: publish each back where it failed, by index.

The rows are read by index (the chosen message ids, or the pending rows in batches for
``--all``) and locked; each is published to the exchange that feeds the queue it failed in
(deadletters.failed_at), under its original routing key, as the registry's own broker user
(the ingest then trusts the envelope's producer, proven by its signature), and the broker's
confirm is awaited. The confirmed rows are marked re-injected, with who and when, in the
same transaction that locked them: a concurrent re-injection of the same ids waits and then
finds them done. A crash after a publish and before the commit leaves the row pending, so a
retry publishes it again — harmless, every consumer drops an event id it already has — and
the row then says it was re-injected. The queue itself is never read.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import pika.exceptions
from pika.spec import BasicProperties

from exchange.adapters.postgres import Connection, transaction
from exchange.adapters.rabbitmq import blocking_connection, translated
from exchange.errors import KpxError
from exchange.registry import deadstore
from exchange.registry.deadletters import Status, publish_headers
from exchange.registry.deadstore import Pending, Stored

BATCH = 200  # rows per transaction with --all: bounded memory and lock time


@dataclass(frozen=True, slots=True)
class Reinjection:
    """What a re-injection did, per message id."""

    reinjected: tuple[str, ...] = ()  # published and confirmed, marked re-injected
    unconfirmed: tuple[str, ...] = ()  # the broker refused or returned it: still pending
    already: tuple[Stored, ...] = ()  # chosen, but re-injected before (no publish)
    unknown: tuple[str, ...] = ()  # chosen, but no dead letter has that id
    rows: int = 0  # rows re-injected (one id may have failed in two queues)


def reinject(
    conn: Connection, amqp_url: str, user: str, by: str, message_ids: Collection[str] | None
) -> Reinjection:
    """Re-publish the pending dead letters of ``message_ids`` (all when None) where they
    failed; see the module docstring. ``user`` is the broker user of ``amqp_url`` (the
    registry's), set as ``user_id``; ``by`` is recorded as who re-injected.

    Raises BrokerUnavailable, BrokerRefused or DatabaseUnavailable; what was confirmed
    before the failure is marked.
    """
    broker = blocking_connection(amqp_url, name="registry-reinject")
    try:
        with translated("re-injecting dead letters"):
            channel = broker.channel()
            channel.confirm_delivery()
        if message_ids is None:
            return _all(conn, channel, user, by)
        return _chosen(conn, channel, user, by, set(message_ids))
    finally:
        if broker.is_open:
            broker.close()


def _chosen(conn: Connection, channel: Any, user: str, by: str, ids: set[str]) -> Reinjection:
    with transaction(conn) as cur:
        rows = deadstore.pending_for(cur, ids)
        done, refused, failure = _publish(channel, rows, user)
        deadstore.mark_reinjected(cur, [r.id for r in done], by)
    if failure is not None:
        raise failure
    with transaction(conn) as cur:
        left = ids - {r.message_id for r in rows}
        known = deadstore.states(cur, left) if left else []
    return Reinjection(
        reinjected=_ids(done),
        unconfirmed=_ids(refused),
        already=tuple(s for s in known if s.status is Status.REINJECTED),
        unknown=tuple(sorted(left - {s.message_id for s in known})),
        rows=len(done),
    )


def _all(conn: Connection, channel: Any, user: str, by: str) -> Reinjection:
    reinjected: list[Pending] = []
    unconfirmed: list[Pending] = []
    after = 0
    while True:
        with transaction(conn) as cur:
            rows = deadstore.pending_after(cur, after, BATCH)
            done, refused, failure = _publish(channel, rows, user)
            deadstore.mark_reinjected(cur, [r.id for r in done], by)
        if failure is not None:
            raise failure
        if not rows:
            return Reinjection(
                reinjected=_ids(reinjected), unconfirmed=_ids(unconfirmed), rows=len(reinjected)
            )
        reinjected += done
        unconfirmed += refused
        after = rows[-1].id  # a row dead again meanwhile is pending below it: not looped on


def _publish(
    channel: Any, rows: Sequence[Pending], user: str
) -> tuple[list[Pending], list[Pending], KpxError | None]:
    """Publish ``rows`` with confirms: (confirmed, refused, the error that stopped it)."""
    done: list[Pending] = []
    refused: list[Pending] = []
    for row in rows:
        props = BasicProperties(
            message_id=row.message_id,
            type=row.message_type,
            user_id=user,
            content_type=row.content_type,
            delivery_mode=2,
            headers=publish_headers(row.headers),
        )
        try:
            with translated("re-injecting dead letters"):
                try:
                    channel.basic_publish(
                        row.failed_exchange, row.routing_key, row.body, props, mandatory=True
                    )
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                    refused.append(row)  # not confirmed: the row stays pending
                    continue
        except KpxError as exc:  # the broker is gone: mark what was confirmed, then raise
            return done, refused, exc
        done.append(row)
    return done, refused, None


def _ids(rows: Sequence[Pending]) -> tuple[str, ...]:
    return tuple(sorted({r.message_id or "" for r in rows}))
