"""Bounds that keep one producer's events from exhausting the registry (issue 11, items 6-7).

A validly signed event can still be hostile: a sequence number far above the producer's high
water would open millions of gap rows, and voids parked while a gap is open would pile up
and be re-read by every batch. The region file bounds both (``[policy] max_sequence_jump``,
``max_held_events``, ``max_held_bytes``); past a bound the event is rejected with a reason
like any other, never dropped.

Open gaps are stored as ranges (``sequence_gap_ranges``, sql/007): a jump is one row, and a
number that arrives late splits its range (its history goes to ``sequence_gap_fills``). The
batch's view still holds the few open numbers it needs as a set (``load_open_gaps``).

The checks are pure; the reads and writes take a cursor inside the batch's transaction, after
its producer locks (so what they see cannot change before the commit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exchange.adapters.postgres import Cursor
from exchange.domain.codes import Decision, Reason
from exchange.domain.region import Policy
from exchange.errors import Refusal
from exchange.registry.changes import Gap
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


# The open range holding each (producer, sequence) of a batch, if any: ranges never overlap, so
# it is the one starting last at or below the number (a walk of the primary key per number).
_CONTAINING = (
    "SELECT k.p, k.s, r.first_sequence, r.last_sequence, r.detected_at "
    "FROM unnest(%s::text[], %s::bigint[]) AS k(p, s) CROSS JOIN LATERAL ("
    " SELECT g.first_sequence, g.last_sequence, g.detected_at FROM sequence_gap_ranges g"
    " WHERE g.producer = k.p AND g.first_sequence <= k.s"
    " ORDER BY g.first_sequence DESC LIMIT 1) AS r WHERE r.last_sequence >= k.s"
)


def _columns(sequences: Sequence[tuple[str, int]]) -> tuple[list[str], list[int]]:
    return [p for p, _ in sequences], [s for _, s in sequences]


def gaps_filled(cur: Cursor, sequences: Sequence[tuple[str, int]]) -> dict[str, set[int]]:
    """The batch's sequence numbers that fall in one of their producer's open gaps, per producer.

    Read once a batch, under its producer locks: the producers it names are the ones whose
    held events can become decidable (only theirs are loaded and decoded), and the numbers are
    the open gaps the batch's view needs first (load_open_gaps).
    """
    filled: dict[str, set[int]] = {}
    if sequences:
        cur.execute(_CONTAINING, _columns(sequences))
        for producer, sequence, *_ in cur.fetchall():
            filled.setdefault(producer, set()).add(int(sequence))
    return filled


def load_open_gaps(
    cur: Cursor,
    producers: Sequence[str],
    sequences: Sequence[tuple[str, int]],
    filled: Mapping[str, set[int]],
) -> dict[str, set[int]]:
    """The open gaps a batch needs: not all of them.

    The ones the batch's sequence numbers fill (``filled``, from gaps_filled), plus each
    producer's lowest other one: enough
    to tell whether a void has a gap below it before and after the batch's fills
    (policy._gap_below, policy.releasable). Loading every open gap made each batch of a
    producer with a million of them 20-30 times slower, for good.
    """
    gaps = {producer: set(numbers) for producer, numbers in filled.items()}
    batch: dict[str, set[int]] = {}
    for producer, sequence in sequences:
        batch.setdefault(producer, set()).add(sequence)
    # A range wholly filled by the batch takes one of its numbers, so n + 1 ranges always
    # hold the lowest open number the batch does not fill.
    wanted = [(p, len(batch.get(p, ())) + 1) for p in producers]
    cur.execute(
        "SELECT q.p, g.first_sequence, g.last_sequence "
        "FROM unnest(%s::text[], %s::int[]) AS q(p, n) CROSS JOIN LATERAL ("
        " SELECT first_sequence, last_sequence FROM sequence_gap_ranges"
        " WHERE producer = q.p ORDER BY first_sequence LIMIT q.n) AS g "
        "ORDER BY q.p, g.first_sequence",
        ([p for p, _ in wanted], [n for _, n in wanted]),
    )
    found: set[str] = set()
    for producer, first, last in cur.fetchall():
        low = None if producer in found else lowest_outside(first, last, batch.get(producer, set()))
        if low is not None:
            gaps.setdefault(producer, set()).add(low)
            found.add(producer)
    return gaps


def lowest_outside(first: int, last: int, taken: set[int]) -> int | None:
    """The lowest number of ``first..last`` not in ``taken`` (at most len(taken) + 1 steps)."""
    sequence = first
    while sequence <= last and sequence in taken:
        sequence += 1
    return sequence if sequence <= last else None


def count_open_gaps(cur: Cursor, producers: Sequence[str]) -> dict[str, int]:
    """Open gaps per producer, for the gauge: asked only for producers whose gaps changed."""
    if not producers:
        return {}
    cur.execute(
        "SELECT p, (SELECT COALESCE(sum(g.last_sequence - g.first_sequence + 1), 0)"
        " FROM sequence_gap_ranges g WHERE g.producer = p) FROM unnest(%s::text[]) AS p",
        (list(producers),),
    )
    return {p: int(n) for p, n in cur.fetchall()}


def runs(gaps: Iterable[Gap]) -> list[tuple[str, int, int]]:
    """Missing numbers as ranges: (producer, first, last) per run of consecutive numbers."""
    out: list[tuple[str, int, int]] = []
    for gap in sorted(set(gaps), key=lambda g: (g.producer, g.sequence)):
        if out and out[-1][0] == gap.producer and out[-1][2] == gap.sequence - 1:
            out[-1] = (gap.producer, out[-1][1], gap.sequence)
        else:
            out.append((gap.producer, gap.sequence, gap.sequence))
    return out


def split(first: int, last: int, filled: Iterable[int]) -> list[tuple[int, int]]:
    """What remains open of the range ``first..last`` once ``filled`` numbers arrived."""
    pieces: list[tuple[int, int]] = []
    start = first
    for sequence in sorted(set(filled)):
        if start <= sequence - 1:
            pieces.append((start, sequence - 1))
        start = sequence + 1
    if start <= last:
        pieces.append((start, last))
    return pieces


def write_gaps(cur: Cursor, opened: Sequence[Gap], filled: Sequence[Gap]) -> None:
    """Store the batch's new gaps as ranges, then split the ranges its late numbers fill.

    Opened first: a gap may open and fill within one batch. Filled numbers keep their
    history in sequence_gap_fills.
    """
    ranges = runs(opened)
    if ranges:
        cur.execute(
            "INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
            "ON CONFLICT DO NOTHING",
            ([p for p, _, _ in ranges], [f for _, f, _ in ranges], [x for _, _, x in ranges]),
        )
    if filled:
        _fill(cur, filled)


def _fill(cur: Cursor, filled: Sequence[Gap]) -> None:
    """Replace each range a late number falls in by what remains open of it; keep the fill."""
    cur.execute(_CONTAINING, _columns([(g.producer, g.sequence) for g in filled]))
    hit: dict[tuple[str, int], tuple[int, Any, list[int]]] = {}
    for producer, sequence, first, last, detected in cur.fetchall():
        hit.setdefault((producer, int(first)), (int(last), detected, []))[2].append(int(sequence))
    if not hit:
        return
    keys = list(hit)
    cur.execute(
        "DELETE FROM sequence_gap_ranges g USING unnest(%s::text[], %s::bigint[]) AS k(p, f) "
        "WHERE g.producer = k.p AND g.first_sequence = k.f",
        ([p for p, _ in keys], [f for _, f in keys]),
    )
    pieces = [
        (p, a, b, detected)
        for (p, first), (last, detected, numbers) in hit.items()
        for a, b in split(first, last, numbers)
    ]
    fills = [(p, s, detected) for (p, _), (_, detected, numbers) in hit.items() for s in numbers]
    if pieces:
        cur.execute(
            "INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence, "
            "detected_at) SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], "
            "%s::timestamptz[])",
            tuple(list(column) for column in zip(*pieces, strict=True)),
        )
    cur.execute(
        "INSERT INTO sequence_gap_fills (producer, sequence, detected_at) "
        "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) "
        "ON CONFLICT DO NOTHING",
        tuple(list(column) for column in zip(*fills, strict=True)),
    )
