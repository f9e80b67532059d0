"""``kpx node run``: a node's outbox relay and inbox consumer, with metrics, until stopped."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from exchange.adapters import metrics, postgres
from exchange.adapters.rabbitmq import BatchConsumer
from exchange.adapters.retry import until_stopped
from exchange.messaging.outbox import OutboxRelay
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import VerifiesEvents
from nodes.inbox import Inbox

log = logging.getLogger(__name__)

PACKAGES = ("exchange.messaging", "nodes")


@dataclass(frozen=True)
class NodeService:
    """What a running node needs: its identity, database, broker URL and keys."""

    code: str
    dsn: str = field(repr=False)  # the URLs may carry passwords: never in a repr
    amqp_url: str = field(repr=False)
    schemas: SchemaStore
    keyring: VerifiesEvents
    senders: frozenset[str]

    def run(self, stop: threading.Event, metrics_port: int | None = None) -> None:
        """Relay the outbox and consume the inbox until ``stop`` is set; then drain and return."""
        migrate(self.dsn)
        relay = OutboxRelay(self.dsn, self.amqp_url, self.code)
        relay_thread = threading.Thread(target=relay.run, args=(stop,), name=f"relay-{self.code}")
        relay_thread.start()
        consuming = threading.Event()
        if metrics_port is not None:
            metrics.serve(metrics_port, lambda: _health(relay_thread, consuming))
        try:
            self._consume(stop, consuming)
        finally:
            stop.set()
            relay_thread.join(timeout=30)
        log.info("node %s: stopped", self.code)

    def _consume(self, stop: threading.Event, consuming: threading.Event) -> None:
        for attempt in until_stopped(stop, log):
            with attempt:
                self._consume_once(stop, consuming)

    def _consume_once(self, stop: threading.Event, consuming: threading.Event) -> None:
        def connect() -> postgres.Connection:
            return postgres.connect(self.dsn, application_name=f"kpx-inbox-{self.code}")

        conn = connect()
        consumer = BatchConsumer(
            self.amqp_url,
            topology.node_queue(self.code),
            name=f"inbox-{self.code}",
            prefetch=200,
            batch_size=100,
        )
        inbox = Inbox(self.code, conn, self.schemas, self.keyring, self.senders, connect)
        inbox.consumer = consumer
        try:
            consumer.connect()
            consuming.set()
            metrics.BROKER_CONNECTED.labels(f"inbox-{self.code}").set(1)
            consumer.run(inbox.handle, stop)
        finally:
            consuming.clear()
            metrics.BROKER_CONNECTED.labels(f"inbox-{self.code}").set(0)
            consumer.close()
            inbox.conn.close()


def migrate(dsn: str) -> None:
    """Apply the node's migrations (the outbox's and its own)."""
    conn = postgres.connect(dsn)
    try:
        for package in PACKAGES:
            postgres.migrate(conn, package)
    finally:
        conn.close()


def _health(relay: threading.Thread, consuming: threading.Event) -> tuple[bool, str]:
    ok = relay.is_alive() and consuming.is_set()
    return (
        ok,
        f"relay {'up' if relay.is_alive() else 'down'}, inbox "
        f"{'consuming' if consuming.is_set() else 'not consuming'}\n",
    )
