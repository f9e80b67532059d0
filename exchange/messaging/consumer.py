"""The one consumer of kpx: decode → policy → record, one transaction, ack after the commit.

In the spirit of eventsourcing's ``Follower``: a service supplies a :class:`Handler` —
``decode`` (outside the transaction, so a second process does that CPU work in parallel),
``record`` (the pure policy and the writes, inside ONE transaction with the tracking rows) and
``committed`` (metrics, after the commit) — and :class:`Consumer` owns everything else:

- **connect and reconnect.** A lost broker ends the consuming loop and is reconnected with
  the backoff of :func:`~exchange.adapters.retry.until_stopped`; a lost database surfaces as
  DatabaseUnavailable from the transaction, the batch is retried by the BatchConsumer (its
  deliveries stay unacked), and the connection is reopened before the next attempt.
- **dead-letter exactly once.** What ``decode`` sets aside is published to ``kpx.dead`` with
  its reason before the transaction — never inside it — and a retried batch (the database
  restarting) does not publish it again: the delivery tags already dead-lettered are
  remembered until the batch is acked or the channel is gone. Only a lost channel between
  the dead-lettering and the ack (the broker gone, or the BatchConsumer giving the batch
  back after its last retry) can publish it a second time, on redelivery.
- **poison isolation.** A batch whose ``record`` raises anything but TransientError is
  recorded again one delivery at a time, so the rest of the batch commits. When the database
  refused the one delivery's data (``postgres.refused_data``: a program-limit error, the same
  data fails the same way again) and the handler :class:`Isolates`, the item it makes of it
  (the registry: the event's rejection with the error as its reason) is recorded instead.
  A delivery that still raises is dead-lettered as ``INTERNAL_ERROR`` and handed to
  ``committed`` as a culprit.
- **ack after commit** (the BatchConsumer acks when :meth:`Consumer.handle` returns).
- **look ahead**: a handler that is :class:`LooksAhead` sees each whole batch before its
  deliveries are decoded one by one (the registry sends the signatures to its helper process).
- **health and metrics**: :class:`Health` says whether the consumer is connected and every
  watched thread (the outbox relay) is alive; ``kpx_broker_connected`` and
  ``kpx_dead_letters_total`` are kept here.
- **drain on SIGTERM**: when ``stop`` is set, the batch in hand is finished and acked and
  :meth:`Consumer.run` returns; :class:`RelayThread` then gives the relay a few seconds to
  publish what the last batches wrote.

Errors: :meth:`Consumer.run` raises BrokerRefused (or a programming error) when the service
cannot run; TransientError is retried until ``stop`` is set, then swallowed (a clean stop).
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, Cursor, connect, refused_data, transaction
from exchange.adapters.rabbitmq import BatchConsumer, Delivery
from exchange.adapters.retry import run_until_stopped
from exchange.errors import TransientError
from exchange.messaging.outbox import OutboxRelay, backlog
from exchange.wire import topology

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
INTERNAL_ERROR = "INTERNAL_ERROR"
SWITCH_INTERVAL = 0.001  # seconds: how long a running service's busy thread keeps the GIL


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    """What ``decode`` made of one delivery: an item to record, a dead-letter reason, or both.

    Both: the registry records a refused message's evidence *and* sets the bytes aside.
    The reason reads ``CODE: sentence``; the code is the dead-letter metric's label.
    """

    item: T | None
    dead_letter: str | None = None


class Handler(Protocol[T, R]):
    """What a service supplies to the :class:`Consumer`."""

    def decode(self, delivery: Delivery) -> Decoded[T]:
        """Decode and verify one delivery, outside any transaction; raise only TransientError."""
        ...

    def record(self, cur: Cursor, items: Sequence[T]) -> R:
        """Decide and write ``items`` inside the consumer's one transaction."""
        ...

    def committed(self, db: Database, results: Sequence[R], culprits: Sequence[T]) -> None:
        """Observe what the committed transactions did (metrics observe, never steer)."""
        ...


@runtime_checkable
class Isolates(Protocol[T]):
    """A handler that can turn the one item whose data the database refused into another
    item to record in its place (e.g. the event's rejection, answered to its producer)."""

    def isolate(self, item: T, exc: Exception) -> T:
        """What to record instead of ``item``, whose data made the database raise ``exc``."""
        ...


@runtime_checkable
class LooksAhead(Protocol):
    """A handler that starts work on a whole batch before its deliveries are decoded one
    by one (the registry verifies the signatures in a helper process). Advisory: whatever
    it raises is logged and the batch is decoded as usual."""

    def look_ahead(self, batch: Sequence[Delivery]) -> None:
        """See the class."""
        ...


@dataclass(frozen=True, slots=True)
class Spec:
    """Where a consumer reads and what it is called in logs and metrics."""

    queue: str
    connection_name: str  # the broker connection's name, and the broker-connected label
    service: str  # the dead-letter metric's service label
    prefetch: int = 500
    batch_size: int = 250
    max_wait: float = 0.02  # an idle consumer's look at stop; batches close without it
    linger: float = 0.0  # BatchConsumer's: 0 closes a batch as soon as nothing is buffered
    dead_letters: str = topology.DEAD  # a node's consumer: kpx.dead.nodes (it may not write DEAD)


@dataclass
class Health:
    """What /healthz reports: the consumer is connected and every watched thread alive."""

    consuming: threading.Event = field(default_factory=threading.Event)
    threads: dict[str, threading.Thread] = field(default_factory=dict)

    def watch(self, name: str, thread: threading.Thread) -> None:
        """Report ``thread`` down in :meth:`check` once it has died."""
        self.threads[name] = thread

    def check(self) -> tuple[bool, str]:
        """(healthy, one line of text) for the metrics endpoint."""
        up = {name: t.is_alive() for name, t in self.threads.items()}
        ok = self.consuming.is_set() and all(up.values())
        parts = [f"consumer {'up' if self.consuming.is_set() else 'down'}"]
        parts += [f"{name} {'up' if alive else 'down'}" for name, alive in up.items()]
        return ok, ", ".join(parts) + "\n"


class Database:
    """One service's database connection, reopened once the database has restarted."""

    def __init__(self, dsn: str, application_name: str) -> None:
        self.dsn, self.application_name = dsn, application_name
        self._conn: Connection | None = None

    def get(self) -> Connection:
        """The open connection, or a new one; raises DatabaseUnavailable."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, application_name=self.application_name)
        return self._conn

    def close(self) -> None:
        """Close the connection if it is open."""
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


class Consumer(Generic[T, R]):
    """Consumes ``spec.queue`` with ``handler`` until stopped; see the module docstring."""

    def __init__(
        self,
        amqp_url: str,
        spec: Spec,
        handler: Handler[T, R],
        db: Database,
        health: Health | None = None,
    ) -> None:
        self.amqp_url, self.spec, self.handler, self.db = amqp_url, spec, handler, db
        self.health = health if health is not None else Health()
        self._broker: BatchConsumer | None = None
        self._dead_done: set[int] = set()  # delivery tags dead-lettered (survive batch retries)

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, reconnecting after transient failures."""
        run_until_stopped(stop, log, self.spec.connection_name, self._consume)

    def _consume(self, stop: threading.Event) -> None:
        spec = self.spec
        self._broker = BatchConsumer(
            self.amqp_url, spec.queue, name=spec.connection_name,
            prefetch=spec.prefetch, batch_size=spec.batch_size, max_wait=spec.max_wait,
            linger=spec.linger,
        )  # fmt: skip
        self._dead_done.clear()  # delivery tags belong to a channel: a new one starts afresh
        connected = metrics.BROKER_CONNECTED.labels(spec.connection_name)
        try:
            self._broker.connect()
            self.health.consuming.set()
            connected.set(1)
            log.info("%s: consuming %s", spec.connection_name, spec.queue)
            self._broker.run(self.handle, stop)
        finally:
            self.health.consuming.clear()
            connected.set(0)
            self._broker.close()

    def handle(self, batch: list[Delivery]) -> None:
        """Decode, dead-letter, record and observe one batch; the BatchConsumer acks after.

        Raises TransientError (the BatchConsumer retries the same batch).
        """
        started = time.monotonic()
        if isinstance(self.handler, LooksAhead):
            try:
                self.handler.look_ahead(batch)
            except Exception:
                log.exception("%s: looking ahead failed; decoding as usual", self.spec.service)
        pairs = [(d, item) for d in batch if (item := self._decode(d)) is not None]
        items = [item for _, item in pairs]
        culprits: list[T] = []
        try:
            results = [self._transact(items)] if items else []
        except TransientError:
            raise
        except Exception:
            log.exception(
                "%s: batch of %d failed; retrying one by one", self.spec.service, len(items)
            )
            results, culprits = self._one_by_one(pairs)
        self._dead_done.clear()
        metrics.CONSUMER_BATCH.labels(self.spec.service).observe(time.monotonic() - started)
        metrics.CONSUMER_BATCH_MESSAGES.labels(self.spec.service).observe(len(batch))
        self.handler.committed(self.db, results, culprits)

    def _decode(self, delivery: Delivery) -> T | None:
        try:
            decoded = self.handler.decode(delivery)
        except TransientError:
            raise
        except Exception as exc:  # a bug must not stop the service: set the message aside
            self._culprit(delivery, exc)
            return None
        if decoded.dead_letter is not None:
            self.dead_letter(delivery, decoded.dead_letter)
        return decoded.item

    def _transact(self, items: Sequence[T]) -> R:
        with transaction(self.db.get()) as cur:
            return self.handler.record(cur, items)

    def _one_by_one(self, pairs: Sequence[tuple[Delivery, T]]) -> tuple[list[R], list[T]]:
        results: list[R] = []
        culprits: list[T] = []
        for delivery, item in pairs:
            try:
                results.append(self._transact([item]))
            except TransientError:
                raise
            except Exception as exc:
                log.exception("%s: message %r cannot be recorded", self.spec.service,
                              delivery.properties.message_id)  # fmt: skip
                isolated = self._isolated(item, exc)
                if isolated is not None:
                    results.append(isolated)
                    continue
                self._culprit(delivery, exc)
                culprits.append(item)
        return results, culprits

    def _isolated(self, item: T, exc: Exception) -> R | None:
        """The handler's stand-in for ``item`` recorded, when the database refused its data;
        None when it is a bug (or even the stand-in fails): then it is a culprit."""
        if not (refused_data(exc) and isinstance(self.handler, Isolates)):
            return None
        try:
            return self._transact([self.handler.isolate(item, exc)])
        except TransientError:
            raise
        except Exception:
            log.exception("%s: the stand-in cannot be recorded either", self.spec.service)
            return None

    def _culprit(self, delivery: Delivery, exc: Exception) -> None:
        self.dead_letter(delivery, f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc}")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set ``delivery`` aside on kpx.dead with ``reason``, once however often it is retried."""
        if delivery.delivery_tag in self._dead_done:
            return
        assert self._broker is not None
        log.warning("%s: dead-lettering %r: %s", self.spec.service,
                    delivery.properties.message_id, reason)  # fmt: skip
        self._broker.dead_letter(delivery, self.spec.dead_letters, reason)
        self._dead_done.add(delivery.delivery_tag)
        metrics.DEAD_LETTERS.labels(self.spec.service, reason.split(":", 1)[0]).inc()


class RelayThread:
    """An outbox relay on its own thread, watched by the health and drained on stop."""

    def __init__(self, dsn: str, amqp_url: str, relay: str, health: Health) -> None:
        self.dsn, self.relay = dsn, relay
        self._stop = threading.Event()
        # Its own stop event: the relay keeps publishing while the consumer drains.
        worker = OutboxRelay(dsn, amqp_url, relay)
        self.thread = threading.Thread(
            target=worker.run, args=(self._stop,), name=f"relay-{relay}", daemon=True
        )
        health.watch("relay", self.thread)

    def start(self) -> RelayThread:
        """Start the thread; returns self."""
        self.thread.start()
        return self

    def stop(self, db: Database, drain_timeout: float) -> None:
        """Give the relay ``drain_timeout`` seconds to publish the backlog, then stop it."""
        if self.thread.is_alive():
            _drain(db, self.relay, drain_timeout)
        self._stop.set()
        self.thread.join(timeout=15)


def _drain(db: Database, relay: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if backlog(db.get(), relay) == 0:
                return
        except TransientError:
            return
        time.sleep(0.1)
    log.warning(
        "relay %s: stopping with outbox rows unpublished (the next start sends them)", relay
    )


def run_consumer(
    consumer: Consumer[T, R],
    stop: threading.Event,
    relay: RelayThread | None = None,
    *,
    drain_timeout: float = 5.0,
    stopping: Callable[[Database], None] | None = None,
) -> None:
    """Start ``relay``, consume until ``stop``, call ``stopping`` (what the service writes
    last, for the relay to send: the registry's last checkpoint announcement), drain the
    relay, close the database."""
    # The relay thread and the publisher's IO thread mostly wait on sockets, beside a consumer
    # thread that decodes and verifies (CPU). Each time a waiting thread wakes (a NOTIFY, a
    # query's answer, a confirm) it must take the GIL from the busy thread, which gives it up
    # only every switch interval: 5 ms by default, several times per message on the answer's
    # path. 1 ms keeps those hand-overs short; a switch is forced only while another thread
    # is waiting for the GIL, so an idle relay costs the consumer nothing.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Everything allocated while starting (modules, schemas, templates) lives as long as the
    # process: frozen, a full collection no longer walks it — tens of milliseconds each time,
    # during which a batch in hand waits.
    gc.freeze()
    try:
        if relay is not None:
            relay.start()
        consumer.run(stop)
    finally:
        if stopping is not None:
            try:
                stopping(consumer.db)
            except Exception:  # its work is stored, and redone at the next start
                log.exception("%s: the last act before stopping failed", consumer.spec.service)
        if relay is not None and relay.thread.ident is not None:
            relay.stop(consumer.db, drain_timeout)
        consumer.db.close()
