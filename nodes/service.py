"""``kpx node run``: a node's outbox relay and inbox consumer, with metrics, until stopped."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from exchange.adapters import metrics, postgres
from exchange.adapters.instancelock import InstanceLock
from exchange.messaging.consumer import Consumer, Database, Health, RelayThread, Spec, run_consumer
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import VerifiesEvents
from nodes.inbox import Inbox
from nodes.witness import Witness

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
    witness: Witness | None = None  # the log's witness (DESIGN §12)

    def run(self, stop: threading.Event, metrics_port: int | None = None) -> None:
        """Relay the outbox and consume the inbox until ``stop`` is set; then drain and return."""
        instance = InstanceLock(self.dsn, f"node {self.code}")
        keeper = instance.thread(stop)
        keeper.start()
        try:
            self._run(stop, metrics_port, keeper)
        finally:
            instance.close()
        if instance.lost is not None:  # another instance runs now: not a clean stop
            raise instance.lost

    def _run(
        self, stop: threading.Event, metrics_port: int | None, keeper: threading.Thread
    ) -> None:
        migrate(self.dsn)
        health = Health()
        health.watch("instance-lock", keeper)
        relay = RelayThread(self.dsn, self.amqp_url, self.code, health)
        if metrics_port is not None:
            metrics.serve(metrics_port, health.check)
        spec = Spec(
            topology.node_queue(self.code),
            f"inbox-{self.code}",
            f"node-{self.code}",
            prefetch=200,
            batch_size=100,
            dead_letters=topology.NODE_DEAD,
        )
        inbox = Inbox(self.code, self.schemas, self.keyring, self.senders, self.witness)
        db = Database(self.dsn, f"kpx-inbox-{self.code}")
        run_consumer(Consumer(self.amqp_url, spec, inbox, db, health), stop, relay)
        log.info("node %s: stopped", self.code)


def migrate(dsn: str) -> None:
    """Apply the node's migrations (the outbox's and its own)."""
    conn = postgres.connect(dsn)
    try:
        for package in PACKAGES:
            postgres.migrate(conn, package)
    finally:
        conn.close()
