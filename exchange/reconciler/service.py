"""``kpx reconciler run``: consume the registry's accepted events, record, check, notify.

decode -> policy -> record: each delivery is opened and verified (exchange.wire.envelope): the
registry's signed AcceptedEvents batch, or an older single accepted event; bytes that are
not a verifiable kpx envelope are dead-lettered at once with the reason and never retried
(the registry verified them already, so this means a bug or tampering). The batch
is recorded in ONE transaction (store.apply_batch: tracking rows, projection, event-time
findings and their outbox rows), and the consumer acks after the commit. An
:class:`~exchange.messaging.outbox.OutboxRelay` thread publishes the ``DiscrepancyRaised`` notices;
another thread (:func:`seal_leftovers`) seals the notices that a ``kpx reconcile --as-of``
which crashed after its commit left marked (exchange.reconciler.notices).

The consuming itself — reconnecting, dead-lettering once, ack after commit, health, drain —
is :mod:`exchange.messaging.consumer`'s; this module supplies decode, record and committed.

Errors: ``run`` retries TransientError (broker or database gone) with jittered backoff until
``stop`` is set; BrokerRefused and programming errors propagate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, Cursor, connect, migrate, transaction
from exchange.adapters.rabbitmq import Delivery
from exchange.domain.discrepancy import Limits
from exchange.domain.events import AcceptedBatch, DiscrepancyKind
from exchange.domain.region import Region
from exchange.errors import BadSignature, CodecError, SignatureError, TransientError
from exchange.messaging.consumer import (
    Consumer,
    Database,
    Decoded,
    Health,
    RelayThread,
    Spec,
    run_consumer,
)
from exchange.messaging.outbox import OutboxWriter
from exchange.reconciler import notices
from exchange.reconciler.deadline_checks import RunSummary, reconcile
from exchange.reconciler.store import Context, Raised, apply_batch, open_counts
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import Envelope, VerifiesEvents, open_envelope, read_verified
from exchange.wire.signing import Signer

log = logging.getLogger(__name__)
SERVICE = "reconciler"
SEAL_INTERVAL = 30.0  # seconds between looks for notices a crashed reconcile run left


def context(region: Region, store: SchemaStore, signer: Signer) -> Context:
    """The recording context of ``region`` with an outbox writer signing as ``signer``."""
    return Context(
        limits=Limits.from_policy(region.policy),
        region=region.code,
        members=frozenset(region.member_codes),
        node_codes=frozenset(region.node_codes),
        writer=OutboxWriter(store, signer, relay=topology.reconciler_producer(region.code)),
    )


def prepare(dsn: str) -> None:
    """Apply the outbox and reconciler migrations (idempotent); raises DatabaseUnavailable."""
    conn = connect(dsn, application_name="kpx-reconciler-migrate")
    try:
        migrate(conn, "exchange.messaging")
        migrate(conn, "exchange.reconciler")
    finally:
        conn.close()


def reconcile_as_of(
    dsn: str, region: Region, store: SchemaStore, signer: Signer, day: date
) -> RunSummary:
    """Run the deadline and period checks as of ``day`` and refresh the open gauge.

    Any day: ``kpx reconcile`` refuses a future one before it calls this, the demo reconciles
    as of its simulated day (after today) by calling it in-process. Raises
    DatabaseUnavailable.
    """
    prepare(dsn)
    conn = connect(dsn, application_name="kpx-reconcile")
    try:
        summary = reconcile(conn, context(region, store, signer), day)
        refresh_open_gauge(conn)
    finally:
        conn.close()
    return summary


def seal_leftovers(
    dsn: str, ctx: Context, stop: threading.Event, interval: float = SEAL_INTERVAL
) -> None:
    """Seal the notices a ``kpx reconcile`` left marked (it crashed between its commit and
    its sealing, or while sealing), at once and then every ``interval`` s, until ``stop``.

    The command seals its own notices after its commit; this heals the runs that did not get
    to. A lost database is logged and tried again at the next interval: what is not sealed
    stays marked.
    """
    while not stop.is_set():
        try:
            conn = connect(dsn, application_name="kpx-reconciler-notices")
            try:
                sealed = notices.seal_pending(conn, ctx)
            finally:
                conn.close()
            if sealed:
                log.warning("reconciler: sealed the notices of %d discrepancies that a "
                            "reconcile run had left unsealed", sealed)  # fmt: skip
        except TransientError as exc:
            log.warning("reconciler: sealing leftover notices: %s; retrying in %.0f s",
                        exc, interval)  # fmt: skip
        stop.wait(interval)


def count_raised(raised: list[Raised], conn: Connection) -> None:
    """Observe newly raised discrepancies and refresh the open gauge (after the commit)."""
    for r in raised:
        metrics.DISCREPANCIES_RAISED.labels(r.kind).inc()
    if raised:
        refresh_open_gauge(conn)


def refresh_open_gauge(conn: Connection) -> None:
    """Set kpx_discrepancies_open per kind from the table."""
    with transaction(conn) as cur:
        counts = open_counts(cur)
    for kind in DiscrepancyKind:
        if kind is not DiscrepancyKind.UNKNOWN:
            metrics.DISCREPANCIES_OPEN.labels(kind.value).set(counts.get(kind.value, 0))


@dataclass(frozen=True, slots=True)
class Batch:
    """What one committed transaction recorded: the event types and the new discrepancies."""

    event_types: list[str]
    raised: list[Raised]


class Recording:
    """The reconciler's :class:`~exchange.messaging.consumer.Handler`.

    A delivery is either the registry's ``AcceptedEvents`` (one batch's accepted events under
    the registry's one signature) or, as queued before batching, one accepted event as its
    producer signed it. The registry verified every producer's signature before accepting,
    so inside a verified ``AcceptedEvents`` the events are decoded, not verified again
    (benchmarks/registry_bench.py measures what that saves). Tracking stays per event.
    """

    def __init__(
        self,
        ctx: Context,
        store: SchemaStore,
        keyring: VerifiesEvents,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.ctx, self.store, self.keyring, self.today = ctx, store, keyring, today
        self.recorded = 0

    def decode(self, delivery: Delivery) -> Decoded[tuple[Envelope, ...]]:
        """Open and verify; what is no verifiable kpx envelope is dead-lettered, never retried.

        A batch is set aside whole: one unreadable event in it and none of it is recorded.
        """
        try:
            outer = open_envelope(self.store, self.keyring, delivery.body)
            if outer.event_type != AcceptedBatch.EVENT_TYPE:
                return Decoded((outer,))
            if outer.producer != self.ctx.region:
                raise BadSignature(
                    f"AcceptedEvents signed by {outer.producer!r}: only the registry "
                    f"({self.ctx.region}) vouches for accepted events"
                )
            batch = AcceptedBatch.from_record(outer.payload)
            return Decoded(tuple(read_verified(self.store, e.envelope) for e in batch.events))
        except (CodecError, SignatureError) as exc:
            return Decoded(None, f"{type(exc).__name__}: {exc}")

    def record(self, cur: Cursor, items: Sequence[tuple[Envelope, ...]]) -> Batch:
        """Tracking rows, projection, findings and their notices: store.apply_batch."""
        envelopes = [env for batch in items for env in batch]
        raised = apply_batch(cur, self.ctx, envelopes, self.today())
        return Batch([env.event_type for env in envelopes], raised)

    def committed(
        self, db: Database, results: Sequence[Batch], culprits: Sequence[tuple[Envelope, ...]]
    ) -> None:
        """Count the events and the discrepancies raised; refresh the open gauge."""
        for batch in results:
            for event_type in batch.event_types:
                metrics.RECONCILER_EVENTS.labels(event_type).inc()
            self.recorded += len(batch.event_types)
        raised = [r for batch in results for r in batch.raised]
        if raised:  # the gauge needs the database; a batch of dead letters does not
            count_raised(raised, db.get())


def spec(batch_size: int = 250) -> Spec:
    """Where and how the reconciler consumes."""
    return Spec(
        topology.RECONCILER_QUEUE,
        "kpx-reconciler",
        SERVICE,
        batch_size=batch_size,
        max_wait=0.05,
    )


class Reconciler:
    """The consumer of ``kpx.reconciler``: one transaction per batch, ack after commit."""

    def __init__(
        self,
        dsn: str,
        amqp_url: str,
        ctx: Context,
        store: SchemaStore,
        keyring: VerifiesEvents,
        *,
        batch_size: int = 250,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
        health: Health | None = None,
    ) -> None:
        self.recording = Recording(ctx, store, keyring, today)
        db = Database(dsn, "kpx-reconciler")
        self.consumer = Consumer(amqp_url, spec(batch_size), self.recording, db, health)

    @property
    def recorded(self) -> int:
        """Events recorded since the start (redeliveries included)."""
        return self.recording.recorded

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, reconnecting on transient failures."""
        try:
            self.consumer.run(stop)
        finally:
            self.consumer.db.close()


def run_service(
    dsn: str,
    amqp_url: str,
    region: Region,
    store: SchemaStore,
    keyring: VerifiesEvents,
    signer: Signer,
    stop: threading.Event,
    health: Health | None = None,
    *,
    drain_timeout: float = 5.0,
    seal_interval: float = SEAL_INTERVAL,
) -> None:
    """The whole service: migrations, the relay thread, the consumer, and a thread sealing
    the notices a crashed ``kpx reconcile`` left (:func:`seal_leftovers`); returns when
    stopped.

    ``health`` (for /healthz) says whether the consumer is connected and the relay alive.
    """
    prepare(dsn)
    health = health if health is not None else Health()
    relay = RelayThread(dsn, amqp_url, topology.reconciler_producer(region.code), health)
    ctx = context(region, store, signer)
    reconciler = Reconciler(dsn, amqp_url, ctx, store, keyring, health=health)
    # Its own stop event: it must stop when the consumer does, also when that one failed.
    sealing = threading.Event()
    sealer = threading.Thread(
        target=seal_leftovers, args=(dsn, ctx, sealing, seal_interval), name="seal-leftovers",
        daemon=True,
    )  # fmt: skip
    health.watch("notices", sealer)  # a bug that kills it shows on /healthz
    sealer.start()
    try:
        run_consumer(reconciler.consumer, stop, relay, drain_timeout=drain_timeout)
    finally:
        sealing.set()
        sealer.join(timeout=15)
    log.info("reconciler: stopped")
