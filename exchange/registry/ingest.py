"""The registry's handler for the one consumer: open → lock → load → decide → record.

:class:`Ingest` is an :class:`exchange.messaging.consumer.Handler`. ``decode`` opens (decodes
and verifies) every delivery before the transaction, so a second registry process does that
CPU work in parallel; bytes that are no envelope are dead-lettered by the consumer (and their
evidence recorded). ``record`` runs in the consumer's ONE transaction: it takes advisory locks
on every producer, certificate and event id the batch touches (sorted, so two processes never
deadlock), loads the state they can touch, lets the pure policy decide each event in delivery
order, and :func:`write_decided` writes the event log, the state rows and the registry's
outbox: per batch, one signed decisions message per producer, one notices message per
destination and one accepted-events message for the reconciler (DESIGN §4). The consumer
acks after the commit; ``committed`` counts what the batch did.

A batch that raises anything unexpected is retried one delivery at a time by the consumer.
A delivery whose data the database refuses (a program-limit error such as an index row too
large: the same data fails the same way again) is isolated through :meth:`Ingest.isolate`:
rejected (SCHEMA_INVALID, the error as its detail) and answered to its producer, the others
recorded. Any other delivery that still raises is dead-lettered with the exception as its
reason (a bug: it is re-injected once fixed).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from prometheus_client import Counter

from exchange.adapters import metrics
from exchange.adapters.postgres import Cursor
from exchange.adapters.rabbitmq import Delivery
from exchange.domain.codes import Decision, Reason
from exchange.domain.events import (
    EVENT_TYPES,
    Cosignature,
    ImportConfirmation,
    Issuance,
    ShipmentCancellation,
    Voiding,
)
from exchange.errors import Refusal
from exchange.messaging.consumer import INTERNAL_ERROR, Database, Decoded
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.registry import limits, policy, store
from exchange.registry.changes import Changes
from exchange.registry.log import LogWriter
from exchange.registry.opening import Opened, Opener
from exchange.registry.policy import Event, Verdict
from exchange.wire import topology
from exchange.wire.spliced import NoticeSplicer

log = logging.getLogger(__name__)

SERVICE = "registry"


class Fate(StrEnum):
    """What became of one message: the ``outcome`` label of kpx_events_consumed_total."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    HELD = "held"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one message or held event, for the metrics."""

    producer: str
    outcome: Fate
    reason: str | None = None
    event: Event | None = None
    changed: bool = False
    released: bool = False  # a held void decided now: consumed (and counted) earlier


# A batch message's size bound (DESIGN §4: many answers under one signature). An event is at
# most MAX_EVENT_BYTES, so a 250-event batch of ordinary certificates (a few kB each) is one
# message, and a batch of very large ones is split into messages of at most about this size:
# far below the broker's message size limit and the codec's bound on a declared length.
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_ITEMS = 1000  # answers per message, whatever their size
_SMALL_RECORD = 600  # an upper estimate of a decision or a cancellation, its detail included


@dataclass
class _Notices:
    """One destination's shipment notices of a batch, each with its estimated size; an
    expected one also with its certificate's Avro datum when it can be spliced (or None)."""

    expected: list[tuple[tuple[dict[str, Any], bytes | None], int]] = field(default_factory=list)
    cancelled: list[tuple[dict[str, Any], int]] = field(default_factory=list)


@dataclass
class Answers:
    """What a batch answers, collected per recipient and sent once per recipient and kind.

    Each decision, notice and accepted event stays a whole record of its own inside the
    batch message (DESIGN §4): the registry signs one message, not one per event.
    """

    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    destinations: dict[str, _Notices] = field(default_factory=dict)
    accepted: list[Event] = field(default_factory=list)  # for the reconciler, in order
    splicer: NoticeSplicer | None = None  # notices from the certificates' own bytes

    def notices(self, destination: str) -> _Notices:
        """The notices for ``destination``, created on first use."""
        return self.destinations.setdefault(destination, _Notices())

    def messages(self, producer: str, leaves: Mapping[str, int]) -> list[Pending]:
        """The batch messages: decisions per producer, notices per destination, then the
        accepted events for the reconciler; ``leaves`` maps an event id to its leaf index."""
        out: list[Pending] = []
        for recipient in sorted(self.decisions):
            records = self.decisions[recipient]
            for record in records:
                record["leaf_index"] = leaves.get(record["subject_event_id"])
            weighed = [(r, _SMALL_RECORD + len(r["detail"])) for r in records]
            key = f"{recipient}.RegistryDecisions"
            out += [
                Pending("RegistryDecisions", {"decisions": part}, topology.NOTIFY, key)
                for part in _chunks(weighed)
            ]
        for destination in sorted(self.destinations):
            notices = self.destinations[destination]
            key = f"{destination}.ShipmentNotices"
            # Expected and cancelled never share a message: chunked apart, each stays in order.
            out += [self._expected(part, key) for part in _chunks(notices.expected)]
            out += [
                Pending(
                    "ShipmentNotices", {"expected": [], "cancelled": part}, topology.NOTIFY, key
                )
                for part in _chunks(notices.cancelled)
            ]
        entries = [
            ({"leaf_index": leaves.get(e.event_id), "envelope": e.raw}, len(e.raw) + 16)
            for e in self.accepted
        ]
        key = f"{producer}.AcceptedEvents"
        out += [
            Pending("AcceptedEvents", {"events": part}, topology.ACCEPTED, key)
            for part in _chunks(entries)
        ]
        return out

    def _expected(self, part: Sequence[tuple[dict[str, Any], bytes | None]], key: str) -> Pending:
        """One ShipmentNotices of expected shipments, spliced when every datum is there."""
        records = [record for record, _ in part]
        datums = [datum for _, datum in part if datum is not None]
        payload = None
        if self.splicer is not None and len(datums) == len(part):
            certificates = zip(datums, (r["accepted_at"] for r in records), strict=True)
            payload = self.splicer.expected(list(certificates))
        record = {"expected": records, "cancelled": []}
        return Pending("ShipmentNotices", record, topology.NOTIFY, key, payload=payload)


T = TypeVar("T")


def _chunks(weighed: Sequence[tuple[T, int]]) -> list[list[T]]:
    """``weighed`` items split, in order, into parts under both batch bounds."""
    parts: list[list[T]] = []
    part: list[T] = []
    size = 0
    for record, weight in weighed:
        if part and (size + weight > MAX_BATCH_BYTES or len(part) >= MAX_BATCH_ITEMS):
            parts.append(part)
            part, size = [], 0
        part.append(record)
        size += weight
    if part:
        parts.append(part)
    return parts


@dataclass
class _Session:
    """What one batch's transaction collects while deciding."""

    ctx: policy.Context
    now: datetime
    view: policy.View
    rows: dict[str, store.LogRow] = field(default_factory=dict)
    updates: list[store.Redecided] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)
    answers: Answers = field(default_factory=Answers)
    results: list[Result] = field(default_factory=list)
    leaves: list[Event] = field(default_factory=list)  # accepted, for the log (DESIGN §12)
    budget: limits.HeldBudget | None = None

    def take(self, o: Opened) -> None:
        """Decide and record one opened delivery."""
        if o.key in self.view.seen:
            self.results.append(
                Result(o.producer, Fate.DEAD_LETTERED if o.dead else Fate.DUPLICATE)
            )
            return
        self.view.seen.add(o.key)
        if o.authentic and o.sequence is not None:
            o = self._bounded(o)
        if o.authentic and o.sequence is not None:
            policy.track_sequence(o.producer, o.sequence, o.key, self.view, self.changes)
        if o.event is None:
            assert o.refusal is not None
            verdict = Verdict(Decision.REJECTED, o.refusal.code, o.refusal.sentence)
            self._log(o, verdict)
            self._answer(o.recipient, o.claimed_id, o.event_type, o.sequence, None, verdict)
            outcome = Fate.DEAD_LETTERED if o.dead else Fate.REJECTED
            self.results.append(Result(o.producer, outcome, o.refusal.code))
            return
        verdict = policy.decide(o.event, self.view, self.ctx)
        if self.budget is not None:
            verdict = self.budget.admit(o.event, verdict)
        policy.apply(o.event, verdict, self.view, self.changes)
        self._log(o, verdict)
        self._publish(o.event, verdict)

    def _bounded(self, o: Opened) -> Opened:
        """``o``, or its rejection (sequence not counted) when its number is out of bounds."""
        assert o.sequence is not None
        high = self.view.high_water.get(o.producer, 0)
        refusal = limits.sequence_refusal(o.producer, o.sequence, high, self.ctx.policy)
        return o if refusal is None else replace(o, event=None, refusal=refusal, sequence=None)

    def release(self) -> None:
        """Decide the held voids whose gaps have closed."""
        for event in policy.releasable(self.view):
            verdict = policy.decide(event, self.view, self.ctx)
            policy.apply(event, verdict, self.view, self.changes)
            row = self.rows.get(event.event_id)
            if row is None:  # held by an earlier batch
                decided = store.Redecided(
                    event.event_id, verdict.outcome, verdict.reason, verdict.detail
                )
                self.updates.append(decided)
            else:
                self.rows[event.event_id] = replace(
                    row, decision=verdict.outcome, reason=verdict.reason, detail=verdict.detail
                )
            self._publish(event, verdict, released=True)

    def _log(self, o: Opened, verdict: Verdict) -> None:
        self.rows[o.key] = store.LogRow(
            key=o.key,
            producer=o.producer,
            sequence=o.sequence if o.authentic else None,
            event_type=o.event_type,
            produced_at=o.produced_at,
            certificate_id=o.certificate_id,
            decision=verdict.outcome,
            reason=verdict.reason,
            detail=verdict.detail,
            body=o.delivery.body,
            claimed_event_id=o.claimed_id,
        )

    def _publish(self, event: Event, verdict: Verdict, *, released: bool = False) -> None:
        outcome = verdict.outcome
        fate = Fate(outcome.lower())
        self.results.append(
            Result(event.producer, fate, verdict.reason, event, verdict.changed, released)
        )
        if outcome == Decision.HELD:
            return
        if outcome == Decision.ACCEPTED:
            self.leaves.append(event)
        recipient = policy.decision_recipient(event.producer, self.ctx.node_codes)
        cert_id = event.certificate_id
        self._answer(recipient, event.event_id, event.event_type, event.sequence, cert_id, verdict)
        if outcome != Decision.ACCEPTED or not verdict.changed:
            return
        self.answers.accepted.append(event)
        payload = event.payload
        if isinstance(payload, Voiding):
            self._cancel_shipment(payload)
        if isinstance(payload, Issuance) and payload.certificate.destination in self.ctx.node_codes:
            # The decoded record re-encodes as is: no need to rebuild it from the dataclasses.
            notice = {"certificate": event.record["certificate"], "accepted_at": self.now}
            splicer = self.answers.splicer
            datum = None if splicer is None else splicer.datum(event.encoded)
            self.answers.notices(payload.certificate.destination).expected.append(
                ((notice, datum), len(event.raw))
            )

    def _cancel_shipment(self, voiding: Voiding) -> None:
        """Withdraw the ShipmentExpected the destination got, if it is a node (DESIGN §4)."""
        record = self.view.certs.get(voiding.certificate_id)
        destination = None if record is None else record.certificate().destination
        if destination not in self.ctx.node_codes:
            return
        notice = ShipmentCancellation.of(voiding, self.now).to_record()
        self.answers.notices(destination).cancelled.append((notice, _SMALL_RECORD))

    def _answer(
        self,
        recipient: str | None,
        subject_id: str,
        event_type: str,
        sequence: int | None,
        certificate_id: str | None,
        verdict: Verdict,
    ) -> None:
        if recipient is None:
            return  # no node, so no queue to route an answer to (it would block the relay)
        record = {
            "subject_event_id": subject_id,
            "subject_event_type": event_type if event_type in EVENT_TYPES else "UNKNOWN",
            "subject_sequence": sequence or 0,
            "certificate_id": certificate_id,
            "decision": verdict.outcome,
            "reason": verdict.reason,
            "detail": verdict.detail,
            "decided_at": self.now,
            "leaf_index": None,  # set by write_decided once the log has placed the leaves
        }
        self.answers.decisions.setdefault(recipient, []).append(record)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one committed transaction did: each message's result and the gaps it saw."""

    results: list[Result]
    view: policy.View
    changes: Changes
    open_gaps: dict[str, int] = field(default_factory=dict)  # producers whose gaps changed


def write_decided(
    cur: Cursor, session: _Session, writer: OutboxWriter, merkle: LogWriter | None
) -> None:
    """Write a batch's decided results in its transaction: the event log, state, outbox.

    The one place where what the policy decided becomes rows; a further record of accepted
    events (another log, another table) belongs here, on the same cursor. The answers go out
    as one signed message per recipient and kind (:class:`Answers`), not one per event.
    """
    store.write_log(cur, list(session.rows.values()), session.updates)
    store.write_changes(cur, session.changes)
    leaves: dict[str, int] = {}
    appended = None
    if merkle is not None:  # DESIGN §12: leaves and checkpoint in the decision's commit
        appended = merkle.place(cur, session.leaves)
        if appended is not None:  # the batch's leaves end the tree, in order
            first = appended.checkpoint.size - len(session.leaves)
            leaves = {e.event_id: first + i for i, e in enumerate(session.leaves)}
    # Appended after the log, so each decision names its leaf index (DESIGN §4, §12).
    writer.append_many(cur, session.answers.messages(writer.signer.producer, leaves))
    if merkle is not None and appended is not None:
        # Announced after the answers, so the outbox (published in id order) puts a node's
        # decisions ahead of the checkpoint in its queue: it records them without waiting
        # for the checkpoint to be verified and cosigned first.
        merkle.checkpoint(cur, appended, session.leaves)


class Ingest:
    """The registry's :class:`~exchange.messaging.consumer.Handler`: open, decide, record."""

    def __init__(
        self,
        opener: Opener,
        writer: OutboxWriter,
        ctx: policy.Context,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: LogWriter | None = None,
    ) -> None:
        self.opener, self.writer, self.ctx, self.clock = opener, writer, ctx, clock
        self.log = log  # the transparency log (DESIGN §12); None only in tests of the policy
        self.splicer = NoticeSplicer(writer.store)

    def look_ahead(self, batch: Sequence[Delivery]) -> None:
        """Start verifying the batch's signatures ahead (the consumer's LooksAhead)."""
        self.opener.look_ahead(batch)

    def close(self) -> None:
        """Stop the opener's helper process, if any."""
        self.opener.close()

    def decode(self, delivery: Delivery) -> Decoded[Opened]:
        """Open (decode and verify) one delivery; bytes that are no envelope go to kpx.dead."""
        o = self.opener.open(delivery)
        if o.dead and o.refusal is not None:
            return Decoded(o, f"{o.refusal.code}: {o.refusal.sentence}")
        return Decoded(o)

    def record(self, cur: Cursor, items: Sequence[Opened]) -> Recorded:
        """Lock, load, decide and write ``items`` in the consumer's transaction."""
        answers = Answers(splicer=self.splicer)
        session = _Session(self.ctx, self.clock(), self._prepare(cur, items), answers=answers)
        producers = sorted({o.producer for o in items if o.authentic})
        session.budget = limits.load_budget(cur, producers, self.ctx.policy)
        for o in items:
            session.take(o)
        session.release()
        write_decided(cur, session, self.writer, self.log)
        # Counted only for the producers whose gaps changed: the view holds only some gaps.
        changed = session.changes.gaps_opened + session.changes.gaps_filled
        open_gaps = limits.count_open_gaps(cur, sorted({g.producer for g in changed}))
        return Recorded(session.results, session.view, session.changes, open_gaps)

    def isolate(self, item: Opened, exc: Exception) -> Opened:
        """The one event whose data the database refuses, as its rejection with the reason:
        the consumer records it alone (logged and answered to its producer)."""
        why = f"the registry cannot store this event: {str(exc).strip()}"[:500]
        return replace(item, event=None, refusal=Refusal(Reason.SCHEMA_INVALID, why))

    def committed(
        self, db: Database, results: Sequence[Recorded], culprits: Sequence[Opened]
    ) -> None:
        """Count what the committed transactions did; a culprit counts as dead-lettered."""
        every: list[Result] = []
        for r in results:
            gauge_gaps(r.open_gaps, r.changes)
            every += r.results
        every += [Result(o.producer, Fate.DEAD_LETTERED, INTERNAL_ERROR) for o in culprits]
        observe(every, self.clock(), self.ctx.node_codes)

    def _prepare(self, cur: Cursor, items: Sequence[Opened]) -> policy.View:
        producers = sorted({o.producer for o in items if o.authentic})
        certs = {o.certificate_id for o in items if o.certificate_id is not None}
        names = [f"producer:{p}" for p in producers]
        names += [f"certificate:{c}" for c in certs] + [f"event:{o.key}" for o in items]
        store.lock(cur, names)
        sequences = [(o.producer, o.sequence) for o in items if o.authentic and o.sequence]
        # Held voids are read (and decoded) only when this batch can close a gap below them.
        filled = limits.gaps_filled(cur, sequences)
        held = [self.opener.reopen(body) for body in store.held_bodies(cur, sorted(filled))]
        late = {e.certificate_id for e in held if e.certificate_id is not None} - certs
        if late:  # locked after the batch's own: a deadlock PostgreSQL detects is transient
            store.lock(cur, [f"certificate:{c}" for c in late])
        view = store.load_view(
            cur, [o.key for o in items], producers, sorted(certs | late), sequences, filled
        )
        for event in held:
            view.held.setdefault(event.producer, []).append(event)
        return view


def observe(results: Sequence[Result], now: datetime, nodes: frozenset[str]) -> None:
    """Count what the batch did (after its commit): metrics observe, never steer.

    Amounts are summed per label set and added once per batch: a ``labels()`` lookup and a
    locked increment per event cost as much as deciding a void.
    """
    amounts: dict[tuple[Counter, tuple[str, ...]], float] = defaultdict(float)
    latencies: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.event is not None and isinstance(r.event.payload, Cosignature):
            continue  # witness traffic, counted by kpx_log_cosignatures_total (DESIGN §12)
        # A claimed producer that is no node must not become a label value (unbounded).
        producer = r.producer if r.producer in nodes else "unknown"
        if not r.released:
            amounts[metrics.EVENTS_CONSUMED, (SERVICE, producer, r.outcome)] += 1
        if r.outcome in (Fate.REJECTED, Fate.DEAD_LETTERED) and r.reason:
            amounts[metrics.EVENTS_REJECTED, (producer, r.reason)] += 1
        if r.event is None:
            continue
        if r.outcome != Fate.HELD:
            elapsed = (now - r.event.produced_at).total_seconds()
            latencies[r.producer].append(max(elapsed, 0.0))
        if r.outcome != Fate.ACCEPTED or not r.changed:
            continue
        payload = r.event.payload
        if isinstance(payload, Issuance):
            cert = payload.certificate
            amounts[metrics.CERTIFICATES_ACCEPTED, (r.producer,)] += 1
            amounts[metrics.CARATS_ACCEPTED, (r.producer,)] += float(cert.total_carats)
            amounts[metrics.USD_ACCEPTED, (r.producer,)] += float(cert.total_value_usd)
        elif isinstance(payload, ImportConfirmation):
            amounts[metrics.IMPORT_CONFIRMATIONS, (r.producer,)] += 1
    for (counter, labels), amount in amounts.items():
        counter.labels(*labels).inc(amount)
    for producer, values in latencies.items():
        histogram = metrics.END_TO_END.labels(producer)
        for value in values:
            histogram.observe(value)


def gauge_gaps(open_gaps: dict[str, int], changes: Changes) -> None:
    """Sequence-gap metrics of the producers whose gaps the batch opened or filled."""
    for gap in changes.gaps_opened:
        metrics.SEQUENCE_GAPS.labels(gap.producer).inc()
    for producer, count in open_gaps.items():
        metrics.SEQUENCE_GAPS_OPEN.labels(producer).set(count)
