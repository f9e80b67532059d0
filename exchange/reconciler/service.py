"""``kpx reconciler run``: consume the registry's accepted events, record, check, notify.

decode -> policy -> record: each delivery is opened and verified (exchange.wire.envelope); bytes
that are not a verifiable kpx envelope are dead-lettered at once with the reason and never
retried (the registry verified them already, so this means a bug or tampering). The batch
is recorded in ONE transaction (store.apply_batch: tracking rows, projection, event-time
findings and their outbox rows), and the consumer acks after the commit. An
:class:`~exchange.messaging.outbox.OutboxRelay` thread publishes the ``DiscrepancyRaised`` notices.

Errors: ``run`` retries TransientError (broker or database gone) with jittered backoff until
``stop`` is set; BrokerRefused and programming errors propagate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, connect, migrate, transaction
from exchange.adapters.rabbitmq import BatchConsumer, Delivery
from exchange.adapters.retry import until_stopped
from exchange.domain.discrepancy import Limits
from exchange.domain.events import DiscrepancyKind
from exchange.domain.region import Region
from exchange.errors import CodecError, SignatureError
from exchange.messaging.outbox import OutboxRelay, OutboxWriter
from exchange.reconciler.store import Context, Raised, apply_batch, open_counts
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import Envelope, VerifiesEvents, open_envelope
from exchange.wire.signing import Signer

log = logging.getLogger(__name__)
SERVICE = "reconciler"


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
        consuming: threading.Event | None = None,
    ) -> None:
        self.dsn, self.amqp_url, self.ctx = dsn, amqp_url, ctx
        # Set while the consumer is connected: what the service's /healthz reports.
        self.consuming = consuming if consuming is not None else threading.Event()
        self.store, self.keyring, self.today = store, keyring, today
        self.batch_size = batch_size
        self.recorded = 0
        self._conn: Connection | None = None
        self._consumer: BatchConsumer | None = None

    def handle(self, batch: list[Delivery]) -> None:
        """Open, record and check one batch; dead-letter what cannot be opened."""
        assert self._conn is not None and self._consumer is not None
        if self._conn.closed:  # the database restarted: the consumer is retrying this batch
            self._conn = connect(self.dsn, application_name="kpx-reconciler")
        envelopes: list[Envelope] = []
        for d in batch:
            try:
                envelopes.append(open_envelope(self.store, self.keyring, d.body))
            except (CodecError, SignatureError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.error("reconciler: dead-lettering %r: %s", d.properties.message_id, reason)
                self._consumer.dead_letter(d, topology.DEAD, reason)
                metrics.DEAD_LETTERS.labels(SERVICE, type(exc).__name__).inc()
        with transaction(self._conn) as cur:
            raised = apply_batch(cur, self.ctx, envelopes, self.today())
        for env in envelopes:
            metrics.RECONCILER_EVENTS.labels(env.event_type).inc()
        self.recorded += len(envelopes)
        count_raised(raised, self._conn)

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, reconnecting on transient failures."""
        for attempt in until_stopped(stop, log):
            with attempt:
                try:
                    self._consume(stop)
                finally:
                    self._close()

    def _consume(self, stop: threading.Event) -> None:
        self._conn = connect(self.dsn, application_name="kpx-reconciler")
        self._consumer = BatchConsumer(
            self.amqp_url, topology.RECONCILER_QUEUE, name="kpx-reconciler",
            batch_size=self.batch_size, max_wait=0.05,
        )  # fmt: skip
        self._consumer.connect()
        self.consuming.set()
        metrics.BROKER_CONNECTED.labels(SERVICE).set(1)
        log.info("reconciler: consuming %s", topology.RECONCILER_QUEUE)
        self._consumer.run(self.handle, stop)

    def _close(self) -> None:
        self.consuming.clear()
        metrics.BROKER_CONNECTED.labels(SERVICE).set(0)
        if self._consumer is not None:
            self._consumer.close()
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._consumer, self._conn = None, None


def run_service(
    dsn: str,
    amqp_url: str,
    region: Region,
    store: SchemaStore,
    keyring: VerifiesEvents,
    signer: Signer,
    stop: threading.Event,
    consuming: threading.Event | None = None,
) -> None:
    """The whole service: migrations, the relay thread, the consumer; returns when stopped.

    ``consuming`` is set while the consumer is connected (for /healthz).
    """
    prepare(dsn)
    relay = OutboxRelay(dsn, amqp_url, topology.reconciler_producer(region.code))
    thread = threading.Thread(target=relay.run, args=(stop,), name="reconciler-relay")
    thread.start()
    try:
        ctx = context(region, store, signer)
        Reconciler(dsn, amqp_url, ctx, store, keyring, consuming=consuming).run(stop)
    finally:
        stop.set()
        thread.join(timeout=30)
    log.info("reconciler: stopped")
