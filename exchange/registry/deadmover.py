"""Move ``kpx.registry.dead`` into the dead-letter store: commit, then ack.

The registry service runs :class:`Mover` on a thread (exchange/registry/service.py); the
listing commands call :func:`move_waiting` first, so what they show is complete when the
service is down too. Both consume the queue in batches and ack a batch only after its rows
committed: a crash in between leaves the messages in the queue, and storing them again finds
their rows (deadstore.py). Nothing is lost, nothing is stored twice.

A batch the database refuses (a bug) stops the mover and leaves the messages in the queue —
never dead-lettered again, which would put them back in the very queue being moved. The
queue's length limit and its 80 % alert (topology.DEAD_LIMIT) are the buffer in front of
the store; ``kpx check`` shows both. The service's mover also counts what is pending in the
store into ``kpx_dead_letters_pending`` (:class:`PendingGauge`): stored, a dead letter no longer
shows as a queue depth, and the alert DeadLettersPending reads the gauge instead.

The nodes' set-aside queue ``kpx.nodes.dead`` is not moved: the registry's broker user may
not read it (topology.py), and what a node sets aside is its own inbox's, for its operator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pika.spec import BasicProperties

from exchange.adapters.metrics import DEAD_LETTERS_PENDING
from exchange.adapters.postgres import Connection, connect, transaction
from exchange.adapters.rabbitmq import blocking_connection, translated
from exchange.adapters.retry import run_until_stopped
from exchange.registry import deadstore
from exchange.registry.deadletters import from_message
from exchange.wire import topology

log = logging.getLogger(__name__)

BATCH = 250  # messages per transaction (and the prefetch window)
# After a burst of this many rows the table's statistics are refreshed at once: planned on
# none (a new table, before autovacuum's next round), a page of 100 was a bitmap scan of
# every pending row and a sort — linear in the table, what the store is there to avoid.
ANALYZE_AFTER = 1_000
# How often the service counts what is pending in the store: re-injections happen in other
# processes (the command, the console), and the alert on the gauge waits minutes anyway; a
# count per batch would make a burst quadratic.
COUNT_EVERY = 15.0
Message = tuple[Any, BasicProperties, bytes]


def _batches(channel: Any, idle: float) -> Iterator[list[Message]]:
    """Batches of the queue's messages: full, or what came before ``idle`` seconds of quiet
    (an empty batch when nothing came)."""
    batch: list[Message] = []
    for method, props, body in channel.consume(topology.DEAD_QUEUE, inactivity_timeout=idle):
        if method is not None:
            batch.append((method, props, body))
            if len(batch) < BATCH:
                continue
        yield batch
        batch = []


def move(
    db: Connection,
    channel: Any,
    stop: threading.Event | None,
    idle: float,
    observe: Callable[[Connection], None] | None = None,
) -> int:
    """Store and ack what the queue delivers until ``stop`` is set (None: until it is quiet
    for ``idle`` seconds, or as many as it held at the start have moved); how many moved.
    ``observe`` is called with ``db`` after every batch, moved or empty."""
    held = channel.queue_declare(topology.DEAD_QUEUE, passive=True).method.message_count
    if stop is None and not held:
        return 0
    channel.basic_qos(prefetch_count=BATCH)
    moved = fresh = 0  # fresh: rows moved since the planner's statistics were refreshed
    for batch in _batches(channel, idle):
        if batch:
            with transaction(db) as cur:
                deadstore.store(cur, [from_message(m.routing_key, p, b) for m, p, b in batch])
            _ack(channel, batch[-1][0].delivery_tag)  # only now: the rows are committed
            moved, fresh = moved + len(batch), fresh + len(batch)
        elif fresh >= ANALYZE_AFTER:  # quiet after a burst
            _analyze(db)
            fresh = 0
        if observe is not None:
            observe(db)
        done = (not batch or moved >= held) if stop is None else stop.is_set()
        if done:
            break
    if fresh >= ANALYZE_AFTER:
        _analyze(db)
    channel.cancel()  # the unacked prefetch goes back to the queue
    return moved


def _analyze(db: Connection) -> None:
    with transaction(db) as cur:
        deadstore.analyze(cur)


def _ack(channel: Any, delivery_tag: int) -> None:
    """Ack every delivery up to ``delivery_tag`` (one batch)."""
    channel.basic_ack(delivery_tag, multiple=True)


@contextmanager
def _channel(amqp_url: str, name: str) -> Iterator[Any]:
    """A channel for the dead-letter queue, its connection closed after."""
    conn = blocking_connection(amqp_url, name=name)
    try:
        with translated("moving dead letters"):
            yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def move_waiting(db: Connection, amqp_url: str) -> int:
    """Move what waits in the queue now into the store on ``db``; how many moved.

    Raises BrokerUnavailable, BrokerRefused or DatabaseUnavailable.
    """
    with _channel(amqp_url, "registry-dead-letters") as channel:
        return move(db, channel, None, idle=0.3)


class PendingGauge:
    """``kpx_dead_letters_pending`` from the store, counted at most every ``every`` seconds;
    a queue whose letters were all re-injected goes back to 0 rather than vanishing."""

    def __init__(self, every: float = COUNT_EVERY, clock: Callable[[], float] = time.monotonic):
        self._every, self._clock = every, clock
        self._due = float("-inf")
        self._queues: set[str] = set()

    def __call__(self, db: Connection) -> None:
        now = self._clock()
        if now < self._due:
            return
        with transaction(db) as cur:
            pending = deadstore.pending_by_queue(cur)
        for queue in self._queues - pending.keys():
            DEAD_LETTERS_PENDING.labels(queue).set(0)
        for queue, n in pending.items():
            DEAD_LETTERS_PENDING.labels(queue).set(n)
        self._queues |= pending.keys()
        self._due = now + self._every


class Mover:
    """The registry service's mover: consumes the queue into the store until ``stop``, and
    keeps the pending gauge."""

    def __init__(self, dsn: str, amqp_url: str, gauge: PendingGauge | None = None) -> None:
        self.dsn, self.amqp_url = dsn, amqp_url
        self.gauge = gauge or PendingGauge()

    def run(self, stop: threading.Event) -> None:
        """Move until ``stop`` is set, reconnecting after a lost broker or database."""
        run_until_stopped(stop, log, "dead-letter mover", self._move)

    def _move(self, stop: threading.Event) -> None:
        db = connect(self.dsn, application_name="kpx-registry-dead-letters")
        try:
            with _channel(self.amqp_url, "registry-dead-letter-mover") as channel:
                log.info("dead-letter mover: consuming %s", topology.DEAD_QUEUE)
                move(db, channel, stop, idle=0.2, observe=self.gauge)
        finally:
            db.close()

    def thread(self, stop: threading.Event) -> threading.Thread:
        """The mover on a daemon thread (not started)."""
        return threading.Thread(
            target=self.run, args=(stop,), name="dead-letter-mover", daemon=True
        )
