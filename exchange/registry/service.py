"""``kpx registry run``: the ingest consumer, the registry's outbox relay and its metrics.

:func:`run_registry` migrates the registry database, seeds the participants from the region
file, starts the relay, the dead-letter mover and the checkpoint announcer (threads) and
the metrics endpoint, and consumes ``kpx.registry`` until ``stop`` is set — reconnecting
with jittered, bounded backoff after a lost broker or database. Setting ``stop`` (the CLI
does it on SIGTERM) drains: the batch in hand is finished and acked, consuming stops, the
relay gets a few seconds to publish what the last batches wrote, and the function returns.
"""

from __future__ import annotations

import logging
import threading

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, migrate, transaction
from exchange.domain.region import Region
from exchange.messaging.consumer import Consumer, Database, Health, RelayThread, Spec, run_consumer
from exchange.messaging.outbox import OutboxWriter
from exchange.registry import deadmover, policy, store
from exchange.registry import log as registry_log
from exchange.registry.ingest import SERVICE, Ingest
from exchange.registry.opening import KeySource, Opener
from exchange.registry.preverify import AheadVerifier
from exchange.registry.witnessing import Announcer, Witnessing
from exchange.tlog import note
from exchange.tlog.checkpoint import origin_for
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.signing import Signer

log = logging.getLogger(__name__)

PACKAGES = ("exchange.messaging", "exchange.registry")


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
    log_signer: note.Signer | None = None,
    linger: float = 0.0,
    verify_ahead: bool = False,
) -> None:
    """Run the registry until ``stop`` is set; see the module docstring.

    ``verify_ahead``: a helper process verifies the signatures of batches of 32 or more
    while the consumer opens them (exchange/registry/preverify.py). It spends more CPU in
    all than verifying in line, so it pays only where a core is idle while the consumer
    opens a batch: off by default (on this project's 2-core machine the cores are shared
    with RabbitMQ and PostgreSQL).

    Raises ConfigError, BrokerRefused or DatabaseUnavailable (at start) when the service
    cannot run at all; transient failures later are retried until ``stop``.
    """
    db = Database(dsn, "kpx-registry")
    prepare_database(db.get(), region)
    health = Health()
    relays = RelayThread(dsn, amqp_url, region.code, health) if relay else None
    server = metrics.serve(metrics_port, health.check) if metrics_port is not None else None
    spec = Spec(
        topology.REGISTRY_QUEUE, "registry", SERVICE, prefetch=prefetch, batch_size=batch_size,
        linger=linger,
    )  # fmt: skip
    handler = ingest(db, region, store_, signer, log_signer, verify_ahead=verify_ahead)
    consumer = Consumer(amqp_url, spec, handler, db, health)
    witnessing = handler.log.announce if handler.log is not None else None
    announcer, announcing = None, None
    if isinstance(witnessing, Witnessing):  # the checkpoints a quiet second left behind
        announcer = Announcer(dsn, witnessing)
        announcing = announcer.thread(stop)
        health.watch("announcer", announcing)
        announcing.start()
    # Dead letters go from their queue into the store, where they are listed and re-injected
    # by index (registry/deadmover.py); the queue is only the buffer in front of it.
    moving = threading.Event()  # its own: it also ends when the consumer cannot start
    mover = deadmover.Mover(dsn, amqp_url).thread(moving)
    health.watch("dead-letters", mover)
    mover.start()
    try:
        last = (lambda db: announcer.last(db.get())) if announcer is not None else None
        run_consumer(consumer, stop, relays, drain_timeout=drain_timeout, stopping=last)
    finally:
        if server is not None:
            server.shutdown()
        moving.set()
        mover.join(timeout=15)
        if announcing is not None:
            announcing.join(timeout=15)
        handler.close()


def ingest(
    db: Database,
    region: Region,
    schemas: SchemaStore,
    signer: Signer,
    log_signer: note.Signer | None = None,
    *,
    verify_ahead: bool = False,
) -> Ingest:
    """The registry's handler for the consumer: opener, outbox writer, policy context, log;
    with ``verify_ahead``, a helper process for the signatures (close the handler after)."""
    keys = KeySource(lambda: store.load_keyring(db.get()), max_age=1.0)
    ahead = AheadVerifier() if verify_ahead else None
    opener = Opener(
        schemas,
        keys,
        node_users(region),
        region.node_codes,
        topology.registry_user(region.vhost),
        ahead,
    )
    writer = OutboxWriter(schemas, signer, relay=region.code)
    merkle = None
    if log_signer is not None:  # DESIGN §12: the log, and its checkpoints to the witnesses
        announce = Witnessing(region.code, region.node_codes, writer)
        merkle = registry_log.LogWriter(log_signer, origin_for(region.code), announce)
    return Ingest(opener, writer, context(region), log=merkle)
