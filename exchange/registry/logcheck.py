"""``kpx registry log verify``: recompute the whole tree from storage, check every checkpoint.

The recomputation trusts nothing stored but the event bytes: each leaf's hash is taken from
``event_log.body`` again, the tree is rebuilt with a right edge (memory log2(size), rows
streamed through server-side cursors), and compared at every index with ``log_leaves`` and
``log_hashes``, and at every signed checkpoint with its root. The first leaf that differs is
named; a checkpoint whose root differs names the range of leaves it covers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from exchange.adapters.postgres import Connection, translated
from exchange.errors import BadSignature, MalformedNote
from exchange.tlog import checkpoint, tree
from exchange.tlog.note import Verifier

_FETCH = 5000


@dataclass
class Report:
    """What verification found."""

    leaves: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    first_bad_index: int | None = None

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def bad(self, index: int | None, problem: str) -> None:
        """Record a problem, remembering the lowest leaf index named."""
        self.problems.append(problem)
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index = index


def _stream(conn: Connection, name: str, sql: str) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=name) as cur:
        cur.itersize = _FETCH
        cur.execute(sql)
        yield from cur


def verify(conn: Connection, log_key: Verifier, origin: str) -> Report:
    """Check storage against every signed checkpoint; never raises for a bad row."""
    report = Report()
    conn.rollback()  # one snapshot for every read below: a running registry keeps appending
    try:
        with translated("log verify"), conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT tree_size, root_hash, note FROM log_checkpoints ORDER BY 1")
            checkpoints = [(int(s), bytes(r), str(n)) for s, r, n in cur.fetchall()]
            cur.execute("SELECT tree_size FROM log_head")
            head = cur.fetchone()
            roots = _check_notes(checkpoints, log_key, origin, report)
            size = report.leaves = _recompute(conn, roots, report)
            _outside(cur, report)
    finally:
        conn.rollback()
    top = max(roots, default=0)  # the largest size the log key really signed
    if head is None or int(head[0]) != size:
        report.bad(None, f"log_head says {head and head[0]}, storage holds {size} leaves")
    if size < top:
        report.bad(size, f"checkpoint {top} covers leaves beyond {size - 1}: rows were removed")
    return report


def _outside(cur: Any, report: Report) -> None:
    """Accepted events with no leaf: a decision the log does not record (a row added)."""
    cur.execute(
        "SELECT count(*), min(e.event_id::text) FROM event_log e WHERE e.decision = 'ACCEPTED' "
        "AND NOT EXISTS (SELECT 1 FROM log_leaves l WHERE l.event_id = e.event_id)"
    )
    count, first = cur.fetchone()
    if count:
        report.bad(None, f"{count} accepted event(s) outside the log, e.g. {first}")


def _check_notes(
    checkpoints: list[tuple[int, bytes, str]], key: Verifier, origin: str, report: Report
) -> dict[int, bytes]:
    """Each checkpoint note must verify and say what its row says: {size: signed root}."""
    roots: dict[int, bytes] = {}
    for size, root, text in checkpoints:
        try:
            cp, _ = checkpoint.open_checkpoint(text, key, origin)
        except (BadSignature, MalformedNote) as exc:
            report.bad(None, f"checkpoint {size}: {exc}")
            continue
        if cp.size != size or cp.root != root:
            report.bad(None, f"checkpoint {size}: its row differs from its signed note")
        roots[cp.size] = cp.root
        report.checkpoints += 1
    return roots


def _recompute(conn: Connection, roots: dict[int, bytes], report: Report) -> int:
    """Rebuild the tree leaf by leaf; returns how many leaves are stored contiguously."""
    leaves = _stream(
        conn,
        "kpx_log_leaves",
        "SELECT l.leaf_index, l.event_id::text, l.leaf_hash, e.body, e.decision "
        "FROM log_leaves l LEFT JOIN event_log e USING (event_id) ORDER BY l.leaf_index",
    )
    hashes = _stream(conn, "kpx_log_hashes", "SELECT hash_index, hash FROM log_hashes ORDER BY 1")
    edge = tree.RightEdge(0, [])
    previous = 0
    for index, event_id, stored_leaf, body, decision in leaves:
        if index != edge.size:
            report.bad(edge.size, f"leaf {edge.size}: missing from log_leaves")
            return edge.size
        leaf = _leaf(index, event_id, body, decision, bytes(stored_leaf), report)
        for hash_index, h in edge.append(leaf):
            row = next(hashes, None)
            if row is None or row[0] != hash_index or bytes(row[1]) != h:
                report.bad(index, f"leaf {index}: stored hash {hash_index} differs")
                return edge.size
        signed = roots.get(edge.size)
        if signed is not None:
            if signed != edge.root():
                first = previous
                report.bad(first, f"checkpoint {edge.size}: root differs from storage "
                           f"(a leaf in {first}..{edge.size - 1} changed)")  # fmt: skip
            previous = edge.size
    return edge.size


def _leaf(
    index: int, event_id: str, body: Any, decision: Any, stored: bytes, report: Report
) -> bytes:
    """The leaf hash recomputed from the event bytes (or the stored one, flagged)."""
    if body is None:
        report.bad(index, f"leaf {index}: event {event_id} is missing from event_log")
        return stored
    if decision != "ACCEPTED":
        report.bad(index, f"leaf {index}: event {event_id} is now {decision}, not ACCEPTED")
    leaf = tree.leaf_hash(bytes(body))
    if leaf != stored:
        report.bad(index, f"leaf {index}: event {event_id} does not hash to its leaf")
    return leaf
