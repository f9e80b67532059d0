"""``kpx node audit --member XX``: does the registry's log hold what this node knows?

Passes (no problem) only when, against the registry's latest checkpoint (signed with the log
key this node was given):

- every event this node had accepted is included, and its leaf is exactly the envelope
  bytes the node sent (so the registry cannot stand in other bytes for them) — except a
  cosignature the registry logged after the latest checkpoint it announced;
- every checkpoint this node stored as a witness is consistent with the latest one (a
  registry that showed this node another history than it shows now is caught here), and
  none is larger than the latest (a log that shrank);
- no checkpoint was refused by this node's witness (a fork or forgery seen earlier).

An audit that passes stores the latest checkpoint as the witness's newest when it is newer
than what the witness holds: it was just proved consistent with everything the node had
stored, so the witness can verify the next checkpoints from it again (a node that missed
checkpoints, or whose database was restored, refuses them as ``unverifiable`` until then).

The registry is reached through a :class:`LogSource` (its database in a one-machine region,
its ``/log`` HTTP face elsewhere), so this module holds only the checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from exchange.adapters.postgres import Cursor
from exchange.errors import BadProof, BadSignature, KpxError, MalformedNote, NotFound
from exchange.tlog import checkpoint, proof, tree
from exchange.tlog.checkpoint import Checkpoint
from exchange.tlog.note import Verifier


class LogSource(Protocol):
    """What an auditor asks of the registry's log."""

    def latest_checkpoint_note(self) -> str:
        """The latest checkpoint note (cosignatures may follow)."""
        ...

    def leaf(self, event_id: str) -> tuple[int, bytes]:
        """(leaf index, leaf bytes) of an event; raises NotFound."""
        ...

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size``."""
        ...

    def consistency(self, old: int, new: int) -> list[bytes]:
        """The consistency proof from tree size ``old`` to ``new``."""
        ...


@dataclass
class AuditReport:
    """What the audit checked and what failed."""

    latest: Checkpoint | None = None
    events: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    anchored: bool = False  # the latest checkpoint became the witness's newest


def audit(cur: Cursor, source: LogSource, log_key: Verifier, region: str) -> AuditReport:
    """Run every check of the module docstring; never raises for a failed check."""
    report = AuditReport()
    try:
        text = source.latest_checkpoint_note()
        latest, _ = checkpoint.open_checkpoint(text, log_key, checkpoint.origin_for(region))
    except (BadSignature, MalformedNote, NotFound) as exc:
        report.problems.append(f"latest checkpoint: {exc}")
        return report
    report.latest = latest
    _check_events(cur, source, latest, report)
    _check_checkpoints(cur, source, latest, report)
    cur.execute("SELECT tree_size, reason, detail FROM witness_refusals ORDER BY id")
    for size, reason, detail in cur.fetchall():
        if reason != "unverifiable":  # no evidence against the log: the anchor below fixes it
            report.problems.append(f"witness refused checkpoint {size} ({reason}): {detail}")
    if not report.problems:
        _anchor(cur, latest, text, report)
    return report


def _anchor(cur: Cursor, latest: Checkpoint, text: str, report: AuditReport) -> None:
    cur.execute("SELECT max(tree_size) FROM witness_checkpoints")
    (newest,) = cur.fetchone() or (None,)
    if newest is None or newest < latest.size:
        cur.execute(
            "INSERT INTO witness_checkpoints (tree_size, root_hash, note) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (latest.size, latest.root, text),
        )
        report.anchored = True


def _check_events(cur: Cursor, source: LogSource, latest: Checkpoint, report: AuditReport) -> None:
    cur.execute(
        "SELECT DISTINCT ON (e.event_id) e.event_id::text, e.event_type, o.body "
        "FROM node_events e JOIN outbox o ON o.event_id = e.event_id "
        "WHERE e.registry_state = 'accepted' ORDER BY e.event_id"
    )
    for event_id, event_type, body in cur.fetchall():
        try:
            index, leaf = source.leaf(event_id)
            if index >= latest.size and event_type == "LogCosigned":
                continue  # a batch of cosignatures only is served with the next checkpoint
            report.events += 1
            if leaf != bytes(body):
                raise BadProof(f"leaf {index} is not the envelope this node sent")
            path = source.inclusion(index, latest.size)
            proof.verify_inclusion(index, latest.size, tree.leaf_hash(leaf), path, latest.root)
        except KpxError as exc:
            report.problems.append(f"event {event_id}: not included in the latest tree: {exc}")


def _check_checkpoints(
    cur: Cursor, source: LogSource, latest: Checkpoint, report: AuditReport
) -> None:
    cur.execute("SELECT tree_size, root_hash FROM witness_checkpoints ORDER BY 1")
    for size, root in cur.fetchall():
        report.checkpoints += 1
        if size > latest.size:
            report.problems.append(
                f"checkpoint {size}: larger than the latest ({latest.size}): the log shrank"
            )
            continue
        try:
            path = source.consistency(size, latest.size)
            proof.verify_consistency(size, latest.size, bytes(root), latest.root, path)
        except KpxError as exc:
            report.problems.append(
                f"checkpoint {size} stored by this node is not consistent with the latest "
                f"checkpoint {latest.size}: {exc}"
            )
