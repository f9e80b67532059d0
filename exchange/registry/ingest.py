"""The batch handler of ``kpx registry run``: open → lock → load → decide → record → commit.

Per batch: every delivery is opened (decoded and verified) before the transaction, so a
second registry process does that CPU work in parallel; bytes that are no envelope are
dead-lettered at once. Then ONE transaction takes advisory locks on every producer,
certificate and event id the batch touches (sorted, so two processes never deadlock), loads
the state they can touch, lets the pure policy decide each event in delivery order, and writes
the event log, the state rows and the registry's outbox (decisions, shipment notices, the
accepted events for the reconciler). The consumer acks after this returns.

A batch that raises anything unexpected is retried one delivery at a time; the delivery that
still raises is dead-lettered with the exception as its reason, and the others are recorded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter

from exchange.adapters import metrics
from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.adapters.rabbitmq import Delivery
from exchange.domain.events import EVENT_TYPES, Cosignature, ImportConfirmation, Issuance
from exchange.errors import TransientError
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.registry import policy, store
from exchange.registry.log import LogWriter
from exchange.registry.opening import Opened, Opener
from exchange.registry.policy import ACCEPTED, HELD, REJECTED, Event, Verdict
from exchange.wire import topology

log = logging.getLogger(__name__)

SERVICE = "registry"
DeadLetter = Callable[[Delivery, str], None]


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one message or held event, for the metrics."""

    producer: str
    outcome: str  # accepted | rejected | held | duplicate | dead_lettered
    reason: str | None = None
    event: Event | None = None
    changed: bool = False
    released: bool = False  # a held void decided now: consumed (and counted) earlier


@dataclass
class _Session:
    """What one batch's transaction collects while deciding."""

    ctx: policy.Context
    now: datetime
    view: policy.View
    rows: dict[str, store.LogRow] = field(default_factory=dict)
    updates: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    changes: policy.Changes = field(default_factory=policy.Changes)
    outgoing: list[Pending] = field(default_factory=list)
    accepted: list[tuple[str, str, str, str, bytes]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    leaves: list[Event] = field(default_factory=list)  # accepted, for the log (DESIGN §12)

    def take(self, o: Opened) -> None:
        """Decide and record one opened delivery."""
        if o.key in self.view.seen:
            self.results.append(Result(o.producer, "dead_lettered" if o.dead else "duplicate"))
            return
        self.view.seen.add(o.key)
        if o.authentic and o.sequence is not None:
            policy.track_sequence(o.producer, o.sequence, o.key, self.view, self.changes)
        if o.event is None:
            assert o.refusal is not None
            verdict = Verdict(REJECTED, o.refusal.code, o.refusal.sentence)
            self._log(o, verdict)
            self._answer(o.recipient, o.claimed_id, o.event_type, o.sequence, None, verdict)
            outcome = "dead_lettered" if o.dead else "rejected"
            self.results.append(Result(o.producer, outcome, o.refusal.code))
            return
        verdict = policy.decide(o.event, self.view, self.ctx)
        policy.apply(o.event, verdict, self.view, self.changes)
        self._log(o, verdict)
        self._publish(o.event, verdict)

    def release(self) -> None:
        """Decide the held voids whose gaps have closed."""
        for event in policy.releasable(self.view):
            verdict = policy.decide(event, self.view, self.ctx)
            policy.apply(event, verdict, self.view, self.changes)
            row = self.rows.get(event.event_id)
            if row is None:  # held by an earlier batch
                decided = (event.event_id, verdict.outcome, verdict.reason, verdict.detail)
                self.updates.append(decided)
            else:
                self.rows[event.event_id] = _decided(row, verdict)
            self._publish(event, verdict, released=True)

    def _log(self, o: Opened, verdict: Verdict) -> None:
        self.rows[o.key] = store.LogRow(
            o.key,
            o.producer,
            o.sequence if o.authentic else None,
            o.event_type,
            o.produced_at,
            o.certificate_id,
            verdict.outcome,
            verdict.reason,
            verdict.detail,
            o.delivery.body,
            o.claimed_id,
        )

    def _publish(self, event: Event, verdict: Verdict, *, released: bool = False) -> None:
        outcome = verdict.outcome
        self.results.append(
            Result(
                event.producer, outcome.lower(), verdict.reason, event, verdict.changed, released
            )
        )
        if outcome == HELD:
            return
        if outcome == ACCEPTED:
            self.leaves.append(event)
        recipient = policy.decision_recipient(event.producer, self.ctx.node_codes)
        cert_id = event.certificate_id
        self._answer(recipient, event.event_id, event.event_type, event.sequence, cert_id, verdict)
        if outcome != ACCEPTED or not verdict.changed:
            return
        self.accepted.append(
            (
                event.event_id,
                event.event_type,
                topology.ACCEPTED,
                f"{event.producer}.{event.event_type}",
                event.raw,
            )
        )
        payload = event.payload
        if isinstance(payload, Issuance) and payload.certificate.destination in self.ctx.node_codes:
            # The decoded record re-encodes as is: no need to rebuild it from the dataclasses.
            notice = {"certificate": event.record["certificate"], "accepted_at": self.now}
            self.outgoing.append(
                Pending(
                    "ShipmentExpected",
                    notice,
                    topology.NOTIFY,
                    f"{payload.certificate.destination}.ShipmentExpected",
                )
            )

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
        }
        routing_key = f"{recipient}.RegistryDecision"
        self.outgoing.append(Pending("RegistryDecision", record, topology.NOTIFY, routing_key))


def _decided(row: store.LogRow, verdict: Verdict) -> store.LogRow:
    return store.LogRow(
        row.key,
        row.producer,
        row.sequence,
        row.event_type,
        row.produced_at,
        row.certificate_id,
        verdict.outcome,
        verdict.reason,
        verdict.detail,
        row.body,
        row.claimed_event_id,
    )


class Ingest:
    """The batch handler; ``handle`` is a BatchConsumer handler."""

    def __init__(
        self,
        conn: Connection,
        opener: Opener,
        writer: OutboxWriter,
        ctx: policy.Context,
        dead_letter: DeadLetter,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reconnect: Callable[[], Connection] | None = None,
        log: LogWriter | None = None,
    ) -> None:
        self.conn, self.opener, self.writer, self.ctx = conn, opener, writer, ctx
        self.log = log  # the transparency log (DESIGN §12); None only in tests of the policy
        self.reconnect = reconnect  # a fresh connection after the database restarted
        self.dead_letter_to = dead_letter
        self.clock = clock
        self._dead_done: set[int] = set()  # delivery tags already dead-lettered (batch retries)

    def handle(self, batch: list[Delivery]) -> None:
        """Decide and record a batch; raises TransientError (the consumer retries it)."""
        items: list[Opened] = []
        for delivery in batch:
            try:
                items.append(self.opener.open(delivery))
            except TransientError:
                raise
            except Exception as exc:  # a bug must not stop the service: set the message aside
                self._culprit(delivery, exc)
        for o in items:
            if o.dead and o.refusal is not None:
                self._dead_letter(o.delivery, f"{o.refusal.code}: {o.refusal.sentence}")
        try:
            results = self.record(items)
        except TransientError:
            raise
        except Exception:
            log.exception("registry: batch of %d failed; retrying one by one", len(items))
            results = self._one_by_one(items)
        self._dead_done.clear()
        observe(results, self.clock(), self.ctx.node_codes)

    def record(self, items: Sequence[Opened]) -> list[Result]:
        """One transaction for ``items``; returns what became of each."""
        if not items:
            return []
        if self.conn.closed and self.reconnect is not None:
            self.conn = self.reconnect()
        with transaction(self.conn) as cur:
            session = _Session(self.ctx, self.clock(), self._prepare(cur, items))
            for o in items:
                session.take(o)
            session.release()
            store.write_log(cur, list(session.rows.values()), session.updates)
            store.write_changes(cur, session.changes)
            self.writer.append_many(cur, session.outgoing)
            self.writer.append_raw(cur, session.accepted)
            if self.log is not None:  # DESIGN §12: leaves and checkpoint in the same commit
                self.log.append(cur, session.leaves)
        gauge_gaps(session.view, session.changes)
        return session.results

    def _prepare(self, cur: Cursor, items: Sequence[Opened]) -> policy.View:
        producers = sorted({o.producer for o in items if o.authentic})
        certs = {o.certificate_id for o in items if o.certificate_id is not None}
        certs.update(store.held_certificates(cur, producers))
        names = [f"producer:{p}" for p in producers]
        names += [f"certificate:{c}" for c in certs] + [f"event:{o.key}" for o in items]
        store.lock(cur, names)
        held = [self.opener.reopen(body) for body in store.held_bodies(cur, producers)]
        late = {e.certificate_id for e in held if e.certificate_id is not None} - certs
        if late:  # held by a batch that committed after our first look: rare
            store.lock(cur, [f"certificate:{c}" for c in late])
        sequences = [(o.producer, o.sequence) for o in items if o.authentic and o.sequence]
        view = store.load_view(
            cur, [o.key for o in items], producers, sorted(certs | late), sequences
        )
        for event in held:
            view.held.setdefault(event.producer, []).append(event)
        return view

    def _one_by_one(self, items: Sequence[Opened]) -> list[Result]:
        results: list[Result] = []
        for o in items:
            try:
                results += self.record([o])
            except TransientError:
                raise
            except Exception as exc:
                log.exception("registry: message %r cannot be recorded", o.claimed_id)
                self._culprit(o.delivery, exc)
                results.append(Result(o.producer, "dead_lettered", "INTERNAL_ERROR"))
        return results

    def _culprit(self, delivery: Delivery, exc: Exception) -> None:
        self._dead_letter(delivery, f"INTERNAL_ERROR: {type(exc).__name__}: {exc}")

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        if delivery.delivery_tag in self._dead_done:
            return
        self.dead_letter_to(delivery, reason)
        self._dead_done.add(delivery.delivery_tag)
        metrics.DEAD_LETTERS.labels(SERVICE, reason.split(":", 1)[0]).inc()


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
        if r.outcome in ("rejected", "dead_lettered") and r.reason:
            amounts[metrics.EVENTS_REJECTED, (producer, r.reason)] += 1
        if r.event is None:
            continue
        if r.outcome != "held":
            elapsed = (now - r.event.produced_at).total_seconds()
            latencies[r.producer].append(max(elapsed, 0.0))
        if r.outcome != "accepted" or not r.changed:
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


def gauge_gaps(view: policy.View, changes: policy.Changes) -> None:
    """Sequence-gap metrics of the producers a batch touched."""
    for producer, _ in changes.gaps_opened:
        metrics.SEQUENCE_GAPS.labels(producer).inc()
    for producer, gaps in view.open_gaps.items():
        metrics.SEQUENCE_GAPS_OPEN.labels(producer).set(len(gaps))
