"""``kpx node audit --member XX``: does the registry's log hold what this node knows?

Passes (no problem) only when, against the registry's latest checkpoint (signed with the log
key this node was given):

- every event this node had accepted is included, and its leaf is exactly the envelope
  bytes the node sent (so the registry cannot stand in other bytes for them) — except a
  cosignature the registry logged after the latest checkpoint it announced. The registry
  announces a checkpoint at most once a second, so an event accepted within the last second
  may lie past the latest one: the command reads the log again until a checkpoint covers it,
  for at most :data:`COVERED_WITHIN` seconds, then fails naming it (a registry that withholds
  an event it accepted);
- every checkpoint this node stored as a witness is consistent with the latest one (a
  registry that showed this node another history than it shows now is caught here), and
  none is larger than the latest (a log that shrank);
- no checkpoint was refused by this node's witness (a fork or forgery seen earlier).

An audit that passes stores the latest checkpoint as the witness's newest when it is newer
than what the witness holds: it was just proved consistent with everything the node had
stored, so the witness can verify the next checkpoints from it again (a node that missed
checkpoints, or whose database was restored, refuses them as ``unverifiable`` until then).

The node computes every proof itself, from the log's stored hashes as a :class:`LogSource`
serves them (nodes/logclient.py: the registry's public tiles over HTTP), and checks it against
the signed root: a source that serves a wrong hash only makes a proof fail. Each event is found
at the leaf index the registry's decision gave (``node_events.leaf_index``); one accepted
without an index (before that column, or by a single ``RegistryDecision``) is looked for in
the log's entries, a scan bounded by the log's size, and the index proved is stored.

Three steps, so that no node transaction stays open while the log is read over the network:
:func:`read_records` (what the node knows, one short transaction), :func:`audit` (the log
only), :func:`record` (the indexes proved and the anchor, a second short transaction).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from exchange.adapters.postgres import Cursor
from exchange.errors import (
    BadProof,
    BadSignature,
    KpxError,
    MalformedNote,
    NotFound,
    TransientError,
)
from exchange.tlog import checkpoint, proof, tree
from exchange.tlog.checkpoint import Checkpoint
from exchange.tlog.note import Verifier
from exchange.tlog.tree import HashReader

# The registry logs a batch of cosignatures only and signs its checkpoint with the next batch:
# such an event's leaf may lie past the latest checkpoint without anything being wrong.
_SERVED_LATER = "LogCosigned"

# Seconds an accepted event may wait for a checkpoint that covers it (announcements come at
# most once a second; ten of them).
COVERED_WITHIN = 10.0


class LogSource(Protocol):
    """What an auditor reads of the registry's log (nothing of it trusted)."""

    def latest_checkpoint_note(self) -> str:
        """The latest checkpoint note (cosignatures may follow)."""
        ...

    def hashes(self, size: int) -> HashReader:
        """The stored hashes of the tree of ``size`` leaves."""
        ...

    def entry(self, index: int, size: int) -> bytes:
        """The bytes of leaf ``index`` in the tree of ``size``; raises NotFound."""
        ...

    def entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """``(leaf index, bytes)`` of every leaf of the tree of ``size``, in order."""
        ...


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """One of this node's events the registry accepted, with the envelope bytes it sent."""

    event_id: str
    event_type: str
    leaf_index: int | None  # as the registry's decision gave it; None: not said
    body: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    """A checkpoint this node's witness refused."""

    tree_size: int | None
    reason: str
    detail: str


@dataclass(frozen=True)
class NodeRecords:
    """What the audit checks the log against: all of it from the node's own database."""

    events: list[AcceptedEvent]
    checkpoints: list[tuple[int, bytes]]  # (tree size, root hash) the witness stored
    refusals: list[Refusal]


@dataclass
class AuditReport:
    """What the audit checked and what failed."""

    latest: Checkpoint | None = None
    latest_note: str = ""
    events: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    anchored: bool = False  # the latest checkpoint became the witness's newest
    unindexed: int = 0  # accepted events without a stored leaf index: looked for by a scan
    located: dict[str, int] = field(default_factory=dict)  # of those, found and proved
    scanned: int = 0  # entries read by that scan
    later: int = 0  # cosignatures logged after the latest checkpoint: checked next time
    awaiting: int = 0  # events past the latest checkpoint, while they may still wait for one


def read_records(cur: Cursor) -> NodeRecords:
    """The node's accepted events, stored checkpoints and refusals."""
    cur.execute(
        "SELECT DISTINCT ON (e.event_id) e.event_id::text, e.event_type, e.leaf_index, o.body "
        "FROM node_events e JOIN outbox o ON o.event_id = e.event_id "
        "WHERE e.registry_state = 'accepted' ORDER BY e.event_id"
    )
    events = [
        AcceptedEvent(str(e), str(t), None if i is None else int(i), bytes(b))
        for e, t, i, b in cur.fetchall()
    ]
    cur.execute("SELECT tree_size, root_hash FROM witness_checkpoints ORDER BY 1")
    checkpoints = [(int(size), bytes(root)) for size, root in cur.fetchall()]
    cur.execute("SELECT tree_size, reason, detail FROM witness_refusals ORDER BY id")
    refusals = [Refusal(size, str(reason), str(detail)) for size, reason, detail in cur.fetchall()]
    return NodeRecords(events, checkpoints, refusals)


def audit(
    records: NodeRecords,
    source: LogSource,
    log_key: Verifier,
    region: str,
    *,
    may_await: bool = False,
) -> AuditReport:
    """Run every check of the module docstring; never raises for a failed check (a
    TransientError — the log unreachable — propagates). With ``may_await``, an event whose
    leaf lies past the latest checkpoint is counted in ``awaiting`` instead of failing: the
    caller reads the log again a little later."""
    report = AuditReport()
    try:
        text = source.latest_checkpoint_note()
        latest, _ = checkpoint.open_checkpoint(text, log_key, checkpoint.origin_for(region))
    except (BadSignature, MalformedNote, NotFound) as exc:
        report.problems.append(f"latest checkpoint: {exc}")
        return report
    report.latest, report.latest_note = latest, text
    read = source.hashes(latest.size)
    _check_events(records.events, source, read, latest, report, may_await)
    _check_checkpoints(records.checkpoints, read, latest, report)
    for refusal in records.refusals:
        if refusal.reason != "unverifiable":  # no evidence against the log: an anchor fixes it
            report.problems.append(
                f"witness refused checkpoint {refusal.tree_size} ({refusal.reason}): "
                f"{refusal.detail}"
            )
    return report


def record(cur: Cursor, report: AuditReport) -> None:
    """Store the leaf indexes the audit proved; if it passed, anchor the witness on the latest
    checkpoint when that is newer than what the witness holds (sets ``report.anchored``)."""
    for event_id, index in sorted(report.located.items()):
        cur.execute(
            "UPDATE node_events SET leaf_index = %s WHERE event_id = %s::uuid "
            "AND leaf_index IS NULL",
            (index, event_id),
        )
    latest = report.latest
    if report.problems or latest is None:
        return
    cur.execute("SELECT max(tree_size) FROM witness_checkpoints")
    (newest,) = cur.fetchone() or (None,)
    if newest is None or newest < latest.size:
        cur.execute(
            "INSERT INTO witness_checkpoints (tree_size, root_hash, note) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (latest.size, latest.root, report.latest_note),
        )
        report.anchored = True


def _check_events(
    events: list[AcceptedEvent],
    source: LogSource,
    read: HashReader,
    latest: Checkpoint,
    report: AuditReport,
    may_await: bool,
) -> None:
    found = _locate(source, latest, [e for e in events if e.leaf_index is None], report)
    indexed = [
        (event, event.leaf_index if event.leaf_index is not None else found.get(event.event_id))
        for event in events
    ]
    # In leaf order: the source reads each entry bundle and tile once, one after the other.
    indexed.sort(key=lambda pair: (pair[1] is None, pair[1] or 0, pair[0].event_id))
    for event, index in indexed:
        if event.event_type == _SERVED_LATER and (index is None or index >= latest.size):
            report.later += 1  # not among the leaves under the checkpoint: logged after it
            continue
        if may_await and index is not None and index >= latest.size:
            report.awaiting += 1  # accepted after the latest announced checkpoint
            continue
        report.events += 1
        try:
            if index is None:
                raise NotFound(
                    f"no leaf of the {latest.size} under it is the envelope this node sent"
                )
            if index >= latest.size:
                raise BadProof(
                    f"its leaf {index} is past the checkpoint's {latest.size}, and no "
                    "checkpoint announced covers it"
                )
            if source.entry(index, latest.size) != event.body:
                raise BadProof(f"leaf {index} is not the envelope this node sent")
            path = proof.prove_inclusion(index, latest.size, read)
            leaf = tree.leaf_hash(event.body)
            proof.verify_inclusion(index, latest.size, leaf, path, latest.root)
        except TransientError:
            raise
        except KpxError as exc:
            report.problems.append(
                f"event {event.event_id}: not included in the latest tree: {exc}"
            )
            continue
        if event.leaf_index is None:  # proved just now: the next audit goes straight to it
            report.located[event.event_id] = index


def _locate(
    source: LogSource, latest: Checkpoint, wanted: list[AcceptedEvent], report: AuditReport
) -> dict[str, int]:
    """Leaf indexes of the events with none stored, by reading every entry under the
    checkpoint until all are found (at most the log's size); unproved until checked."""
    report.unindexed = len(wanted)
    by_body: dict[bytes, list[str]] = {}
    for event in wanted:
        by_body.setdefault(event.body, []).append(event.event_id)
    found: dict[str, int] = {}
    if not by_body:
        return found
    try:
        for index, data in source.entries(latest.size):
            report.scanned += 1
            for event_id in by_body.pop(data, []):
                found[event_id] = index
            if not by_body:
                break
    except TransientError:
        raise
    except KpxError as exc:  # the events not found yet are reported one by one
        report.problems.append(f"the log's entries could not all be read: {exc}")
    return found


def _check_checkpoints(
    stored: list[tuple[int, bytes]], read: HashReader, latest: Checkpoint, report: AuditReport
) -> None:
    for size, root in stored:
        report.checkpoints += 1
        if size > latest.size:
            report.problems.append(
                f"checkpoint {size}: larger than the latest ({latest.size}): the log shrank"
            )
            continue
        try:
            path = proof.prove_consistency(size, latest.size, read)
            proof.verify_consistency(size, latest.size, root, latest.root, path)
        except TransientError:
            raise
        except KpxError as exc:
            report.problems.append(
                f"checkpoint {size} stored by this node is not consistent with the latest "
                f"checkpoint {latest.size}: {exc}"
            )
