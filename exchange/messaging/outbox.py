"""The transactional outbox: write signed events with the business rows, relay them to RabbitMQ.

Writing (:class:`OutboxWriter`) happens inside the caller's transaction: the producer's
gap-free sequence number is taken from ``producer_sequence`` (its row lock serialises
concurrent writers, and a rollback gives the numbers back, so there are never holes), the
envelope is sealed, and the row is inserted. Nothing reaches the broker unless the business
change committed.

Relaying (:class:`OutboxRelay`) publishes unsent rows in id order with asynchronous confirms,
a batch at a time, and marks a row sent only after the broker confirmed it. A crash between
publish and mark republishes the same bytes (same ``event_id``): consumers drop those
duplicates. One relay per producer runs at a time, guarded by an advisory lock.
"""

from __future__ import annotations

import collections
import logging
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2.extras

from exchange.adapters import metrics
from exchange.adapters.pgcopy import copy_rows
from exchange.adapters.postgres import Connection, Cursor, connect, transaction, translated
from exchange.adapters.rabbitmq import AsyncPublisher, Confirms, Outgoing
from exchange.adapters.retry import stopped_quietly, until_stopped
from exchange.domain.codes import PublishOutcome
from exchange.errors import BrokerUnavailable, DatabaseUnavailable, TransientError
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import SignsEvents, seal

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "kpx_outbox"
_OUTBOX_COLUMNS = ("relay", "event_id", "event_type", "exchange", "routing_key", "body")
_PIPELINE = 2  # batches in flight at once
_REFUSALS_BEFORE_RECONNECT = 3


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A published batch awaiting its confirms: the outbox ids, in order."""

    ids: list[int]
    confirms: Confirms
    started: float


@dataclass(frozen=True, slots=True)
class Pending:
    """An event to append: its type, record and destination."""

    event_type: str
    record: dict[str, Any]
    exchange: str
    routing_key: str
    event_id: str | None = None  # given when business rows must name the event beforehand
    payload: bytes | None = None  # the record already encoded, when the caller has it


@dataclass(frozen=True, slots=True)
class Unsent:
    """One unsent outbox row as the relay reads it, in id order."""

    id: int
    event_id: str
    event_type: str
    exchange: str
    routing_key: str
    body: bytes

    def outgoing(self) -> Outgoing:
        """The message to publish."""
        return Outgoing(self.exchange, self.routing_key, self.body, self.event_id, self.event_type)


@dataclass(frozen=True, slots=True)
class Appended:
    """An appended event's id, sequence number and wire bytes."""

    event_id: str
    sequence: int
    body: bytes


class OutboxWriter:
    """Seals events under one producer identity and appends them inside a transaction."""

    def __init__(self, store: SchemaStore, signer: SignsEvents, relay: str | None = None) -> None:
        self.store = store
        self.signer = signer
        self.relay = relay or signer.producer

    def append(self, cur: Cursor, item: Pending) -> Appended:
        """Append one event; see :meth:`append_many`."""
        return self.append_many(cur, [item])[0]

    def append_many(self, cur: Cursor, items: Sequence[Pending]) -> list[Appended]:
        """Take ``len(items)`` sequence numbers, seal and insert the events; wake the relay.

        Raises SchemaViolation when a record does not match its schema.
        """
        if not items:
            return []
        cur.execute(
            "INSERT INTO producer_sequence (producer, last_sequence) VALUES (%s, %s) "
            "ON CONFLICT (producer) DO UPDATE "
            "SET last_sequence = producer_sequence.last_sequence + EXCLUDED.last_sequence "
            "RETURNING last_sequence",
            (self.signer.producer, len(items)),
        )
        row = cur.fetchone()
        assert row is not None
        first = row[0] - len(items) + 1
        appended: list[Appended] = []
        rows: list[tuple[Any, ...]] = []
        for offset, item in enumerate(items):
            event_id, body = seal(
                self.store,
                self.signer,
                item.event_type,
                item.record,
                first + offset,
                event_id=item.event_id,
                payload=item.payload,
            )
            appended.append(Appended(event_id, first + offset, body))
            rows.append(
                (self.relay, event_id, item.event_type, item.exchange, item.routing_key, body)
            )
        if any(item.event_id is not None for item in items):
            insert_rows(cur, rows)
        else:
            # Fresh uuid4 ids cannot meet an existing row, so the ON CONFLICT guard has
            # nothing to do and COPY (no ON CONFLICT, a third of the SQL cost) is safe.
            copy_rows(cur, "outbox", _OUTBOX_COLUMNS, rows)
            _notify(cur, self.relay)
        return appended


def insert_rows(cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert outbox rows (relay, event_id, event_type, exchange, routing_key, body);
    a row whose (relay, event_id, exchange) is already there is skipped."""
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO outbox (relay, event_id, event_type, exchange, routing_key, body) "
        "VALUES %s ON CONFLICT DO NOTHING",
        [(r[0], r[1], r[2], r[3], r[4], psycopg2.Binary(r[5])) for r in rows],
        page_size=500,
    )
    _notify(cur, rows[0][0])


def _notify(cur: Cursor, relay: str) -> None:
    """Wake the relay when the transaction commits."""
    cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, relay))


class OutboxRelay:
    """Publishes one relay's unsent outbox rows, in order, until stopped."""

    def __init__(
        self,
        dsn: str,
        amqp_url: str,
        relay: str,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.dsn, self.amqp_url, self.relay = dsn, amqp_url, relay
        self.batch_size, self.poll_interval = batch_size, poll_interval
        self.confirm_timeout = confirm_timeout
        self._db: Connection | None = None
        self._listen: Connection | None = None
        self._publisher: AsyncPublisher | None = None
        self._last_gauge = 0.0
        self._refusals = 0  # consecutive batches the broker nacked or returned
        self.published = 0
        self.connected = threading.Event()  # set while connected to both database and broker

    # -- the loop --

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting with jittered backoff on transient errors.

        Stopped while disconnected, it returns quietly: the unsent events stay in the outbox
        for the next start.
        """
        try:
            with stopped_quietly(stop, log, f"relay {self.relay}"):
                for attempt in until_stopped(stop, log):
                    with attempt:
                        try:
                            self._loop(stop)
                        except TransientError:
                            self._disconnect()
                            raise
        finally:
            self._disconnect()

    def _loop(self, stop: threading.Event) -> None:
        # Two batches in flight: while the broker confirms one, the next is read and sent, so
        # the database work never leaves the channel idle. Rows are still marked strictly
        # after their confirm; ``after`` only says what this connection has already sent.
        self._connect(stop)
        window: collections.deque[_InFlight] = collections.deque()
        after = 0
        while not stop.is_set():
            if len(window) < _PIPELINE:
                rows = self._read(after)
                if rows:
                    after = rows[-1].id
                    window.append(self._send(rows))
                    continue
            if window:
                if not self._settle(window.popleft()):
                    self._settle_all(window)
                    after = 0  # re-read from the first unsent row, in order
                continue
            # Caught up, nothing in flight: start again from the first unsent row, which also
            # picks up a row whose transaction committed after a later id had been read.
            after = 0
            self._update_gauges()
            self._wait_for_work(stop)
        self._settle_all(window)

    def _read(self, after: int) -> list[Unsent]:
        assert self._db is not None
        with transaction(self._db, "reading the outbox") as cur:
            cur.execute(
                "SELECT id, event_id::text, event_type, exchange, routing_key, body FROM outbox "
                "WHERE relay = %s AND sent_at IS NULL AND id > %s ORDER BY id LIMIT %s",
                (self.relay, after, self.batch_size),
            )
            return [Unsent(i, e, t, x, k, bytes(b)) for i, e, t, x, k, b in cur.fetchall()]

    def _send(self, rows: list[Unsent]) -> _InFlight:
        assert self._publisher is not None
        messages = [r.outgoing() for r in rows]
        return _InFlight(
            [r.id for r in rows], self._publisher.publish_async(messages), time.monotonic()
        )

    def _settle(self, batch: _InFlight) -> bool:
        """Wait for a batch's confirms, mark the confirmed rows; True when all were confirmed."""
        outcomes = batch.confirms.wait(self.confirm_timeout)
        metrics.PUBLISH_CONFIRM.labels(self.relay).observe(time.monotonic() - batch.started)
        ok = PublishOutcome.CONFIRMED
        confirmed = [i for i, o in zip(batch.ids, outcomes, strict=True) if o == ok]
        self._mark_sent(confirmed)
        self._count(outcomes)
        self.published += len(confirmed)
        if len(confirmed) == len(batch.ids):
            self._refusals = 0
            return True
        self._after_partial(outcomes)
        return False

    def _settle_all(self, window: collections.deque[_InFlight]) -> None:
        while window:
            self._settle(window.popleft())

    def _mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        assert self._db is not None
        # Its COMMIT waits for the WAL flush: the likeliest moment for a dying server to be
        # noticed, so it must end in DatabaseUnavailable (reconnect), like every statement.
        with transaction(self._db, "marking outbox rows sent") as cur:
            cur.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", (ids,))

    def _count(self, outcomes: list[PublishOutcome]) -> None:
        label = self.relay
        metrics.OUTBOX_PUBLISHED.labels(label).inc(len(outcomes))
        for outcome, counter in (
            (PublishOutcome.CONFIRMED, metrics.OUTBOX_CONFIRMED),
            (PublishOutcome.NACKED, metrics.OUTBOX_NACKED),
            (PublishOutcome.RETURNED, metrics.OUTBOX_RETURNED),
        ):
            n = outcomes.count(outcome)
            if n:
                counter.labels(label).inc(n)

    def _after_partial(self, outcomes: list[PublishOutcome]) -> None:
        assert self._publisher is not None
        if PublishOutcome.FAILED in outcomes or self._publisher.closed.is_set():
            raise BrokerUnavailable(f"relay {self.relay}: connection lost, publishes unconfirmed")
        # Nacked or unroutable: the broker is overloaded, a queue is missing, or (in a
        # cluster) the channel still points at a queue leader that died. Back off and retry
        # the same rows in order, never skipping them; after a few refusals in a row,
        # reconnect, which also moves to another cluster node.
        self._refusals += 1
        log.warning(
            "relay %s: %d nacked, %d returned; retrying (%d in a row)",
            self.relay,
            outcomes.count(PublishOutcome.NACKED),
            outcomes.count(PublishOutcome.RETURNED),
            self._refusals,
        )
        if self._refusals >= _REFUSALS_BEFORE_RECONNECT:
            self._refusals = 0
            raise BrokerUnavailable(f"relay {self.relay}: broker keeps refusing; reconnecting")
        time.sleep(1.0)

    # -- connections --

    def _connect(self, stop: threading.Event) -> None:
        self._db = connect(self.dsn, application_name=f"kpx-relay-{self.relay}")
        self._wait_for_lock(stop)
        self._listen = connect(
            self.dsn, autocommit=True, application_name=f"kpx-relay-{self.relay}-listen"
        )
        with translated("listening"), self._listen.cursor() as cur:
            cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._publisher = AsyncPublisher(self.amqp_url, name=f"relay-{self.relay}").start()
        metrics.BROKER_CONNECTED.labels(f"relay-{self.relay}").set(1)
        self._publisher.on_blocked = lambda b: metrics.BROKER_BLOCKED.labels(
            f"relay-{self.relay}"
        ).set(int(b))
        self.connected.set()
        log.info("relay %s: connected", self.relay)

    def _wait_for_lock(self, stop: threading.Event) -> None:
        # Session-level advisory lock: a second relay for the same producer waits here, so
        # events are never published out of order by two relays at once.
        assert self._db is not None
        while not stop.is_set():
            with transaction(self._db, "taking the relay lock") as cur:
                cur.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))", ("kpx-relay:" + self.relay,)
                )
                row = cur.fetchone()
            if row and row[0]:
                return
            log.info("relay %s: another relay holds the lock; waiting", self.relay)
            stop.wait(2.0)
        raise DatabaseUnavailable(f"relay {self.relay}: stopped while waiting for the lock")

    def _disconnect(self) -> None:
        self.connected.clear()
        metrics.BROKER_CONNECTED.labels(f"relay-{self.relay}").set(0)
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        for conn in (self._db, self._listen):
            if conn is not None and not conn.closed:
                conn.close()
        self._db = self._listen = None

    def _wait_for_work(self, stop: threading.Event) -> None:
        assert self._listen is not None
        deadline = time.monotonic() + self.poll_interval
        while not stop.is_set() and time.monotonic() < deadline:
            if self._publisher is not None and self._publisher.closed.is_set():
                raise BrokerUnavailable(f"relay {self.relay}: connection closed")
            ready, _, _ = select.select([self._listen], [], [], 0.1)
            if ready:
                with translated("reading notifications"):
                    self._listen.poll()
                if self._listen.notifies:
                    self._listen.notifies.clear()
                    return

    def _update_gauges(self, every: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._last_gauge < every or self._db is None:
            return
        self._last_gauge = now
        with transaction(self._db, "measuring the outbox") as cur:
            cur.execute(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
                "FROM outbox WHERE relay = %s AND sent_at IS NULL",
                (self.relay,),
            )
            row = cur.fetchone()
        assert row is not None
        metrics.OUTBOX_BACKLOG.labels(self.relay).set(row[0])
        metrics.OUTBOX_OLDEST_AGE.labels(self.relay).set(float(row[1]))


def backlog(conn: Connection, relay: str | None = None) -> int:
    """How many outbox rows (of one relay, or all) are not yet confirmed by the broker."""
    with transaction(conn, "counting the outbox") as cur:
        if relay is None:
            cur.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        else:
            cur.execute(
                "SELECT count(*) FROM outbox WHERE relay = %s AND sent_at IS NULL", (relay,)
            )
        row = cur.fetchone()
    return int(row[0]) if row else 0
