"""The node's inbox: decisions, expected shipments, discrepancies and status changes.

Consumed by :class:`~exchange.messaging.consumer.Consumer` from ``kpx.node.<CODE>``: decode
and verify (only the registry and the reconciler may write here) before the transaction,
record the message's id as a tracking row and apply it in one transaction, ack after the
commit. The registry answers a batch with one signed ``RegistryDecisions`` and one
``ShipmentNotices`` per recipient: verified once, applied with one statement per kind; the
single ``RegistryDecision``, ``ShipmentExpected`` and ``ShipmentCancelled`` messages queued
before batching are applied the same way. A duplicate finds its tracking row and is skipped;
an unreadable or unverifiable message is set aside on ``kpx.dead.nodes`` with its reason
(the node service's Spec names it: a node may not publish into ``kpx.dead``), never retried:
a batch whose signature fails is set aside whole, nothing of it applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exchange.adapters import metrics
from exchange.adapters.postgres import Cursor
from exchange.adapters.rabbitmq import Delivery
from exchange.domain.events import (
    Decision,
    DecisionBatch,
    DiscrepancyNotice,
    NoticeBatch,
    ShipmentCancellation,
    ShipmentNotice,
    StatusChange,
)
from exchange.domain.keyevents import KeyRevocation
from exchange.errors import PermanentError
from exchange.messaging.consumer import Database, Decoded
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import Envelope, VerifiesEvents, open_envelope
from nodes import keystore, store
from nodes.witness import Witness

log = logging.getLogger(__name__)


class Inbox:
    """The inbox's :class:`~exchange.messaging.consumer.Handler`: one node's queue to its store."""

    def __init__(
        self,
        code: str,
        schemas: SchemaStore,
        keyring: VerifiesEvents,
        senders: frozenset[str],
        witness: Witness | None = None,
    ) -> None:
        self.code = code
        self.witness = witness  # checks and cosigns the registry's log checkpoints
        self.schemas = schemas
        self.keyring = keyring
        self.senders = senders  # the registry's and the reconciler's producer identities

    def decode(self, delivery: Delivery) -> Decoded[tuple[Envelope, bytes]]:
        """Open and verify; a message that is unreadable or from anyone else is set aside."""
        try:
            envelope = open_envelope(self.schemas, self.keyring, delivery.body)
            if envelope.producer not in self.senders:
                raise PermanentError(f"producer {envelope.producer!r} may not write to a node")
        except PermanentError as exc:
            return Decoded(None, f"{type(exc).__name__}: {exc}")
        return Decoded((envelope, delivery.body))

    def record(self, cur: Cursor, items: Sequence[tuple[Envelope, bytes]]) -> list[str]:
        """Track and apply each message; return the event types applied, one per event.

        The tracking row is the message's id, a batch's included: a redelivered batch finds
        it and is skipped whole, as is a duplicate within the same consumer batch.
        """
        rows = [(e.event_id, e.producer, e.sequence, e.event_type, body) for e, body in items]
        new = store.inbox_record(cur, rows)
        applied: list[str] = []
        for envelope, _ in items:
            if envelope.event_id in new:
                new.discard(envelope.event_id)
                applied += self._apply(cur, envelope)
        return applied

    def committed(
        self,
        db: Database,
        results: Sequence[list[str]],
        culprits: Sequence[tuple[Envelope, bytes]],
    ) -> None:
        """Count the messages applied."""
        for event_types in results:
            for event_type in event_types:
                metrics.INBOX_RECEIVED.labels(self.code, event_type).inc()

    def _apply(self, cur: Cursor, envelope: Envelope) -> list[str]:
        """Apply one message; the event types it carried, one per event (a batch's many)."""
        payload = envelope.payload
        kind = envelope.event_type
        if kind == DecisionBatch.EVENT_TYPE:  # many answers under one signature (DESIGN §4)
            decisions = [Decision.from_record(d) for d in payload["decisions"]]
            store.apply_decisions(cur, decisions)
            return [Decision.EVENT_TYPE] * len(decisions)
        if kind == NoticeBatch.EVENT_TYPE:
            store.expect_shipments(cur, payload["expected"])
            cancelled = [ShipmentCancellation.from_record(c) for c in payload["cancelled"]]
            store.cancel_shipments(cur, cancelled)
            return [ShipmentNotice.EVENT_TYPE] * len(payload["expected"]) + [
                ShipmentCancellation.EVENT_TYPE
            ] * len(cancelled)
        # One event per message: as every message was before batching, and may still be queued.
        if kind == Decision.EVENT_TYPE:
            store.apply_decisions(cur, [Decision.from_record(payload)])
        elif kind == ShipmentNotice.EVENT_TYPE:
            store.expect_shipments(cur, [payload])
        elif kind == ShipmentCancellation.EVENT_TYPE:
            store.cancel_shipments(cur, [ShipmentCancellation.from_record(payload)])
        elif envelope.event_type == "DiscrepancyRaised":
            store.record_discrepancy(cur, DiscrepancyNotice.from_record(payload).to_record())
        elif envelope.event_type == "ParticipantStatusChanged":
            s = StatusChange.from_record(payload)
            store.record_status(cur, s.participant, s.status.value, s.effective_on, s.reason)
        elif envelope.event_type == "LogCheckpoint" and self.witness is not None:
            self.witness.receive(cur, payload)  # DESIGN §12
        elif envelope.event_type == "KeyRevoked":  # DESIGN §15: one of this node's keys
            keystore.record_revocation(cur, KeyRevocation.from_record(payload))
        else:
            log.warning("node %s: ignoring a %s event", self.code, envelope.event_type)
        return [kind]
