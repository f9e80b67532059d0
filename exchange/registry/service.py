"""``kpx registry run``: the ingest consumer, the registry's outbox relay and its metrics.

:func:`run_registry` migrates the registry database, seeds the participants from the region
file, starts the relay (a thread) and the metrics endpoint, and consumes ``kpx.registry``
until ``stop`` is set — reconnecting with jittered, bounded backoff after a lost broker or
database. Setting ``stop`` (the CLI does it on SIGTERM) drains: the batch in hand is
finished and acked, consuming stops, the relay gets a few seconds to publish what the last
batches wrote, and the function returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, connect, migrate, transaction
from exchange.adapters.rabbitmq import BatchConsumer, Delivery
from exchange.adapters.retry import until_stopped
from exchange.domain.region import Region
from exchange.errors import TransientError
from exchange.messaging.outbox import OutboxRelay, OutboxWriter, backlog
from exchange.registry import policy, store
from exchange.registry.ingest import SERVICE, Ingest
from exchange.registry.opening import KeySource, Opener
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.signing import Signer

log = logging.getLogger(__name__)

PACKAGES = ("exchange.messaging", "exchange.registry")


@dataclass
class _Db:
    """The registry's database connection, reopened after it was lost."""

    dsn: str
    conn: Connection | None = None

    def get(self) -> Connection:
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.dsn, application_name="kpx-registry")
        return self.conn

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()


@dataclass
class _Health:
    consuming: bool = False
    relay: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)

    def check(self) -> tuple[bool, str]:
        relay_ok = self.relay is None or self.relay.is_alive()
        ok = self.consuming and relay_ok
        text = f"consumer {'up' if self.consuming else 'down'}, relay "
        text += "up" if relay_ok else "down"
        return ok, text + "\n"


def prepare_database(conn: Connection, region: Region) -> None:
    """Apply the migrations and seed the participants from the region file (idempotent)."""
    for package in PACKAGES:
        migrate(conn, package)
    with transaction(conn) as cur:
        store.seed_participants(cur, region)


def node_users(region: Region) -> dict[str, str]:
    """Broker user -> node code, for every member and partner (users carry the vhost)."""
    return {topology.node_user(code, region.vhost): code for code in region.node_codes}


def context(region: Region) -> policy.Context:
    """What the policy needs of the region."""
    return policy.Context(
        region.code, region.member_codes, frozenset(region.node_codes), region.policy
    )


def run_registry(
    dsn: str,
    amqp_url: str,
    region: Region,
    store_: SchemaStore,
    signer: Signer,
    stop: threading.Event,
    metrics_port: int | None = None,
    *,
    prefetch: int = 500,
    batch_size: int = 250,
    relay: bool = True,
    drain_timeout: float = 5.0,
) -> None:
    """Run the registry until ``stop`` is set; see the module docstring.

    Raises ConfigError, BrokerRefused or DatabaseUnavailable (at start) when the service
    cannot run at all; transient failures later are retried until ``stop``.
    """
    db = _Db(dsn)
    prepare_database(db.get(), region)
    health = _Health()
    relay_stop = threading.Event()
    if relay:
        health.relay = _start_relay(dsn, amqp_url, region.code, relay_stop)
    server = metrics.serve(metrics_port, health.check) if metrics_port is not None else None
    try:
        _consume(db, amqp_url, region, store_, signer, stop, health, prefetch, batch_size)
    finally:
        if health.relay is not None:
            _drain(db, region.code, drain_timeout)
        relay_stop.set()
        if health.relay is not None:
            health.relay.join(timeout=15)
        if server is not None:
            server.shutdown()
        db.close()


def _start_relay(dsn: str, amqp_url: str, relay: str, stop: threading.Event) -> threading.Thread:
    worker = OutboxRelay(dsn, amqp_url, relay)

    def run() -> None:
        try:
            worker.run(stop)
        except TransientError as exc:
            # Only when stopped mid-retry (e.g. a second registry still waiting for the lock).
            log.info("relay %s: stopped (%s)", relay, exc)

    thread = threading.Thread(target=run, name=f"relay-{relay}", daemon=True)
    thread.start()
    return thread


def _drain(db: _Db, relay: str, timeout: float) -> None:
    """Give the relay a moment to publish what the last batches wrote."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if backlog(db.get(), relay) == 0:
                return
        except TransientError:
            return
        time.sleep(0.1)
    log.warning("registry: stopping with outbox rows unpublished (the next start sends them)")


def _consume(
    db: _Db,
    amqp_url: str,
    region: Region,
    schemas: SchemaStore,
    signer: Signer,
    stop: threading.Event,
    health: _Health,
    prefetch: int,
    batch_size: int,
) -> None:
    keys = KeySource(lambda: store.load_keyring(db.get()), max_age=1.0)
    opener = Opener(
        schemas, keys, node_users(region), region.node_codes, topology.registry_user(region.vhost)
    )
    writer = OutboxWriter(schemas, signer, relay=region.code)
    ctx = context(region)
    retrying = until_stopped(stop, log)
    try:
        for attempt in retrying:
            with attempt:
                consumer = BatchConsumer(
                    amqp_url,
                    topology.REGISTRY_QUEUE,
                    name="registry",
                    prefetch=prefetch,
                    batch_size=batch_size,
                )
                ingest = Ingest(
                    db.get(), opener, writer, ctx, _dead_letter_to(consumer), reconnect=db.get
                )
                _consume_once(consumer, ingest, stop, health)
    except TransientError:
        if not stop.is_set():
            raise
        log.info("registry: stopped while reconnecting")


def _dead_letter_to(consumer: BatchConsumer) -> Callable[[Delivery, str], None]:
    def dead_letter(delivery: Delivery, reason: str) -> None:
        consumer.dead_letter(delivery, topology.DEAD, reason)

    return dead_letter


def _consume_once(
    consumer: BatchConsumer, ingest: Ingest, stop: threading.Event, health: _Health
) -> None:
    try:
        consumer.connect()
        health.consuming = True
        metrics.BROKER_CONNECTED.labels(SERVICE).set(1)
        log.info("registry: consuming %s", topology.REGISTRY_QUEUE)
        consumer.run(ingest.handle, stop)
    finally:
        health.consuming = False
        metrics.BROKER_CONNECTED.labels(SERVICE).set(0)
        consumer.close()
