"""Bounds that keep one producer's events from exhausting the registry (issue 11, items 6-7).

A validly signed event can still be hostile: a sequence number far above the producer's high
water would open millions of gap rows, and voids parked while a gap is open would pile up
and be re-read by every batch. The region file bounds both (``[policy] max_sequence_jump``,
``max_held_events``, ``max_held_bytes``); past a bound the event is rejected with a reason
like any other, never dropped.

The checks are pure; the two reads take a cursor inside the batch's transaction, after its
producer locks (so what they see cannot change before the commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from exchange.adapters.postgres import Cursor
from exchange.domain.codes import Decision, Reason
from exchange.domain.region import Policy
from exchange.errors import Refusal
from exchange.registry.policy import Event, Verdict


def sequence_refusal(
    producer: str, sequence: int, high_water: int, policy: Policy
) -> Refusal | None:
    """Why ``sequence`` cannot be taken from ``producer``, or None.

    Sequence numbers start at 1 (DESIGN §5); a jump above the high water by more than the
    region's bound would open that many gaps, so it is refused instead.
    """
    if sequence < 1:
        return Refusal(
            Reason.SCHEMA_INVALID, f"sequence {sequence}: a producer numbers its events from 1"
        )
    jump = sequence - high_water
    if jump > policy.max_sequence_jump:
        return Refusal(
            Reason.NOT_ALLOWED,
            f"sequence {sequence} of {producer} is {jump:,} above its last ({high_water}); "
            f"the region allows a jump of at most {policy.max_sequence_jump:,}",
        )
    return None


@dataclass(slots=True)
class HeldBudget:
    """How many held events (and bytes) each producer has, and what the region allows."""

    policy: Policy
    usage: dict[str, list[int]] = field(default_factory=dict)  # producer -> [count, bytes]

    def admit(self, event: Event, verdict: Verdict) -> Verdict:
        """``verdict``, or a rejection when holding ``event`` would exceed the bounds."""
        if verdict.outcome != Decision.HELD:
            return verdict
        used = self.usage.setdefault(event.producer, [0, 0])
        count, size = used[0] + 1, used[1] + len(event.raw)
        if count > self.policy.max_held_events or size > self.policy.max_held_bytes:
            return Verdict(
                Decision.REJECTED,
                Reason.UNKNOWN_CERTIFICATE,
                f"certificate {event.certificate_id} is not known, and {event.producer} already "
                f"has {used[0]} events ({used[1]:,} bytes) waiting for its missing events; the "
                f"region holds at most {self.policy.max_held_events} "
                f"({self.policy.max_held_bytes:,} bytes)",
            )
        used[0], used[1] = count, size
        return verdict


def load_budget(cur: Cursor, producers: Sequence[str], policy: Policy) -> HeldBudget:
    """The held events of ``producers`` as they stand (the partial index answers this)."""
    cur.execute(
        "SELECT producer, count(*), COALESCE(sum(length(body)), 0) FROM event_log "
        "WHERE decision = 'HELD' AND producer = ANY(%s) GROUP BY producer",
        (list(producers),),
    )
    return HeldBudget(policy, {p: [int(n), int(b)] for p, n, b in cur.fetchall()})


def closing_producers(cur: Cursor, sequences: Sequence[tuple[str, int]]) -> list[str]:
    """Producers for which the batch brings an event that fills one of their open gaps.

    Only their held events can become decidable, so only theirs are loaded and decoded.
    """
    if not sequences:
        return []
    cur.execute(
        "SELECT DISTINCT g.producer FROM sequence_gaps g "
        "JOIN unnest(%s::text[], %s::bigint[]) AS k(p, s) ON g.producer = k.p "
        "AND g.sequence = k.s WHERE g.filled_at IS NULL ORDER BY g.producer",
        ([p for p, _ in sequences], [s for _, s in sequences]),
    )
    return [r[0] for r in cur.fetchall()]


def load_open_gaps(
    cur: Cursor, producers: Sequence[str], sequences: Sequence[tuple[str, int]]
) -> dict[str, set[int]]:
    """The open gaps a batch needs: not all of them.

    The ones the batch's sequence numbers fill, plus each producer's lowest other one: enough
    to tell whether a void has a gap below it before and after the batch's fills
    (policy._gap_below, policy.releasable). Loading every open gap made each batch of a
    producer with a million of them 20-30 times slower, for good.
    """
    batch = ([p for p, _ in sequences], [s for _, s in sequences])
    gaps: dict[str, set[int]] = {}
    cur.execute(
        "SELECT g.producer, g.sequence FROM sequence_gaps g "
        "JOIN unnest(%s::text[], %s::bigint[]) AS k(p, s) ON g.producer = k.p "
        "AND g.sequence = k.s WHERE g.filled_at IS NULL",
        batch,
    )
    for producer, sequence in cur.fetchall():
        gaps.setdefault(producer, set()).add(int(sequence))
    cur.execute(
        "SELECT p, low.sequence FROM unnest(%s::text[]) AS p CROSS JOIN LATERAL ("
        " SELECT g.sequence FROM sequence_gaps g WHERE g.producer = p AND g.filled_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::bigint[]) AS k(kp, ks)"
        "  WHERE k.kp = p AND k.ks = g.sequence)"
        " ORDER BY g.sequence LIMIT 1) AS low",
        (list(producers), *batch),
    )
    for producer, sequence in cur.fetchall():
        gaps.setdefault(producer, set()).add(int(sequence))
    return gaps


def count_open_gaps(cur: Cursor, producers: Sequence[str]) -> dict[str, int]:
    """Open gaps per producer, for the gauge: asked only for producers whose gaps changed."""
    if not producers:
        return {}
    cur.execute(
        "SELECT p, (SELECT count(*) FROM sequence_gaps g WHERE g.producer = p "
        "AND g.filled_at IS NULL) FROM unnest(%s::text[]) AS p",
        (list(producers),),
    )
    return {p: int(n) for p, n in cur.fetchall()}
