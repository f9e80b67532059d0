"""The node's inbox: decisions, expected shipments, discrepancies and status changes.

Consumes ``kpx.node.<CODE>``: decode and verify (only the registry and the reconciler may
write here), record the message's id as a tracking row and apply it in the same transaction,
ack after the commit. A duplicate finds its tracking row and is skipped; an unreadable or
unverifiable message is set aside on ``kpx.dead`` with its reason, never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.adapters.rabbitmq import BatchConsumer, Delivery
from exchange.domain.events import Decision, DiscrepancyNotice, ShipmentNotice, StatusChange
from exchange.domain.keyevents import KeyRevocation
from exchange.errors import PermanentError
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import Envelope, VerifiesEvents, open_envelope
from nodes import keystore, store

log = logging.getLogger(__name__)


class Inbox:
    """Applies the messages of one node's queue to its store."""

    def __init__(
        self,
        code: str,
        conn: Connection,
        schemas: SchemaStore,
        keyring: VerifiesEvents,
        senders: frozenset[str],
        reconnect: Callable[[], Connection] | None = None,
    ) -> None:
        self.code = code
        self.conn = conn
        # A fresh connection once the database restarted: the consumer retries the batch,
        # and without one every retry would meet the same closed connection.
        self.reconnect = reconnect
        self.schemas = schemas
        self.keyring = keyring
        self.senders = senders  # the registry's and the reconciler's producer identities
        self.consumer: BatchConsumer | None = None

    def handle(self, batch: list[Delivery]) -> None:
        """Apply one batch in one transaction (the consumer acks it afterwards)."""
        if self.conn.closed and self.reconnect is not None:
            self.conn = self.reconnect()
        with transaction(self.conn) as cur:
            for delivery in batch:
                envelope = self._open(delivery)
                if envelope is not None and store.inbox_record(
                    cur,
                    envelope.event_id,
                    envelope.producer,
                    envelope.sequence,
                    envelope.event_type,
                    delivery.body,
                ):
                    self._apply(cur, envelope)
                    metrics.INBOX_RECEIVED.labels(self.code, envelope.event_type).inc()

    def _open(self, delivery: Delivery) -> Envelope | None:
        try:
            envelope = open_envelope(self.schemas, self.keyring, delivery.body)
            if envelope.producer not in self.senders:
                raise PermanentError(f"producer {envelope.producer!r} may not write to a node")
            return envelope
        except PermanentError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning(
                "node %s: setting aside message %r: %s",
                self.code,
                delivery.properties.message_id,
                reason,
            )
            assert self.consumer is not None
            self.consumer.dead_letter(delivery, topology.DEAD, reason)
            metrics.DEAD_LETTERS.labels(f"node-{self.code}", type(exc).__name__).inc()
            return None

    def _apply(self, cur: Cursor, envelope: Envelope) -> None:
        payload = envelope.payload
        if envelope.event_type == "RegistryDecision":
            d = Decision.from_record(payload)
            store.apply_decision(
                cur, d.subject_event_id, d.decision.value, d.reason, d.detail, d.decided_at
            )
        elif envelope.event_type == "ShipmentExpected":
            notice = ShipmentNotice.from_record(payload)
            store.expect_shipment(cur, notice.certificate, notice.accepted_at)
        elif envelope.event_type == "DiscrepancyRaised":
            store.record_discrepancy(cur, DiscrepancyNotice.from_record(payload).to_record())
        elif envelope.event_type == "ParticipantStatusChanged":
            s = StatusChange.from_record(payload)
            store.record_status(cur, s.participant, s.status.value, s.effective_on, s.reason)
        elif envelope.event_type == "KeyRevoked":  # DESIGN §15: one of this node's keys
            keystore.record_revocation(cur, KeyRevocation.from_record(payload))
        else:
            log.warning("node %s: ignoring a %s event", self.code, envelope.event_type)
