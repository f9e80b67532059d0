"""The registry's dead-letter store (sql/008): every query by index, none reads the table whole.

Moving (:func:`store`) upserts by digest: the same dead copy delivered again — the mover died
between its commit and its ack — updates its row, never adds one; a message that comes back
dead after a re-injection is pending again with ``times_dead`` one higher. Listing
(:func:`page`) is a keyset page (``id > after``) with optional filters; re-injecting takes
the pending rows of the chosen message ids (:func:`pending_for`) or the next batch of all
(:func:`pending_after`), locked, and :func:`mark_reinjected` records who and when.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.extras

from exchange.adapters.postgres import Cursor
from exchange.registry.deadletters import DeadLetter, Status

_UPSERT = """
INSERT INTO dead_letters (digest, message_id, event_id, failed_queue, failed_exchange,
                          routing_key, reason, message_type, content_type, headers, body)
VALUES %s
ON CONFLICT (digest) DO UPDATE SET
    last_seen = now(),
    reason = EXCLUDED.reason,
    headers = EXCLUDED.headers,
    times_dead = dead_letters.times_dead + (dead_letters.status = 'reinjected')::int,
    status = 'pending'
"""


def store(cur: Cursor, letters: Sequence[DeadLetter]) -> None:
    """Insert ``letters``, or update the rows of those already stored (see the docstring)."""
    # One statement cannot update a row twice: a copy delivered twice in one batch is one.
    unique = {d.digest: d for d in letters}
    rows = [
        (
            d.digest,
            d.message_id,
            d.event_id,
            d.failed_queue,
            d.failed_exchange,
            d.routing_key,
            d.reason,
            d.message_type,
            d.content_type,
            json.dumps(d.headers),
            d.body,
        )
        for d in unique.values()
    ]
    psycopg2.extras.execute_values(cur, _UPSERT, rows, page_size=len(rows) or 1)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which stored dead letters to list; ``after`` is the last id of the previous page."""

    status: Status | None = Status.PENDING  # None: every status
    queue: str | None = None  # the queue they failed in
    reason: str | None = None  # the reason starts with this (e.g. a code, SCHEMA_INVALID)
    since: datetime | None = None  # last seen at or after
    after: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored dead letter as listed (the body's size, not the body)."""

    id: int
    message_id: str | None
    event_id: str | None
    failed_queue: str
    routing_key: str
    reason: str
    size: int
    times_dead: int
    status: Status
    first_seen: datetime
    last_seen: datetime
    reinjected_at: datetime | None
    reinjected_by: str | None

    def to_json(self) -> dict[str, Any]:
        """The row as ``--json`` prints it (times in ISO 8601)."""
        values: dict[str, Any] = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for name in ("first_seen", "last_seen", "reinjected_at"):
            values[name] = values[name].isoformat() if values[name] is not None else None
        values["status"] = str(self.status)
        return values


_LISTED = (
    "id, message_id, event_id::text, failed_queue, routing_key, reason, octet_length(body), "
    "times_dead, status, first_seen, last_seen, reinjected_at, reinjected_by"
)


def page(cur: Cursor, wanted: Filter) -> list[Stored]:
    """One page of dead letters in id order (by the primary key or the pending index)."""
    where, params = ["id > %s"], list[object]([wanted.after])
    if wanted.status is not None:
        where.append("status = %s")
        params.append(str(wanted.status))
    if wanted.queue is not None:
        where.append("failed_queue = %s")
        params.append(wanted.queue)
    if wanted.reason is not None:
        where.append("starts_with(reason, %s)")
        params.append(wanted.reason)
    if wanted.since is not None:
        where.append("last_seen >= %s")
        params.append(wanted.since)
    cur.execute(
        f"SELECT {_LISTED} FROM dead_letters WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
        (*params, wanted.limit),
    )
    return [_stored(row) for row in cur.fetchall()]


def _stored(row: tuple[Any, ...]) -> Stored:
    (id_, message_id, event_id, queue, key, reason, size, times, status, *seen) = row
    first, last, at, by = seen
    return Stored(
        id_, message_id, event_id, queue, key, reason, size, times, Status(status), first, last,
        at, by,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Pending:
    """A pending dead letter as re-injection needs it: where it goes back, and what."""

    id: int
    message_id: str | None
    failed_exchange: str
    routing_key: str
    message_type: str | None
    content_type: str | None
    headers: dict[str, Any]
    body: bytes


_PENDING = (
    "SELECT id, message_id, failed_exchange, routing_key, message_type, content_type, headers, "
    "body FROM dead_letters"
)


def pending_for(cur: Cursor, message_ids: Collection[str]) -> list[Pending]:
    """The pending dead letters of ``message_ids`` (index lookups), locked until the commit:
    a second re-injection of the same ids waits, then finds them re-injected."""
    cur.execute(
        f"{_PENDING} WHERE message_id = ANY(%s) AND status = 'pending' ORDER BY id FOR UPDATE",
        (list(message_ids),),
    )
    return [_pending(row) for row in cur.fetchall()]


def pending_after(cur: Cursor, after: int, limit: int) -> list[Pending]:
    """The next ``limit`` pending dead letters after id ``after``, locked; rows another
    re-injection holds are skipped (it publishes them)."""
    cur.execute(
        f"{_PENDING} WHERE status = 'pending' AND id > %s ORDER BY id LIMIT %s "
        "FOR UPDATE SKIP LOCKED",
        (after, limit),
    )
    return [_pending(row) for row in cur.fetchall()]


def _pending(row: tuple[Any, ...]) -> Pending:
    id_, message_id, exchange, key, message_type, content_type, headers, body = row
    return Pending(id_, message_id, exchange, key, message_type, content_type, headers, bytes(body))


def mark_reinjected(cur: Cursor, ids: Collection[int], by: str) -> None:
    """Record that the rows ``ids`` were published back (confirmed by the broker)."""
    if ids:
        cur.execute(
            "UPDATE dead_letters SET status = 'reinjected', reinjections = reinjections + 1, "
            "reinjected_at = now(), reinjected_by = %s WHERE id = ANY(%s)",
            (by, list(ids)),
        )


def states(cur: Cursor, message_ids: Collection[str]) -> list[Stored]:
    """Every stored dead letter of ``message_ids``, whatever its status (index lookups)."""
    cur.execute(
        f"SELECT {_LISTED} FROM dead_letters WHERE message_id = ANY(%s) ORDER BY id",
        (list(message_ids),),
    )
    return [_stored(row) for row in cur.fetchall()]


def counts(cur: Cursor) -> dict[Status, int]:
    """Stored dead letters per status (for ``kpx check``); none before the registry first ran
    (its migrations create the table)."""
    cur.execute("SELECT to_regclass('dead_letters') IS NOT NULL")
    row = cur.fetchone()
    found: dict[Status, int] = {}
    if row is not None and row[0]:
        cur.execute("SELECT status, count(*) FROM dead_letters GROUP BY status")
        found = {Status(status): int(n) for status, n in cur.fetchall()}
    return {s: found.get(s, 0) for s in Status}


def pending_by_queue(cur: Cursor) -> dict[str, int]:
    """Stored dead letters not re-injected, per queue they failed in (the pending gauge)."""
    cur.execute(
        "SELECT failed_queue, count(*) FROM dead_letters WHERE status = 'pending'"
        " GROUP BY failed_queue"
    )
    return {queue: int(n) for queue, n in cur.fetchall()}


def analyze(cur: Cursor) -> None:
    """Refresh the planner's statistics of the table (after a burst of dead letters)."""
    cur.execute("ANALYZE dead_letters")
