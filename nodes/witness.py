"""The node as a witness of the registry's log (DESIGN §12).

Each ``LogCheckpoint`` from the registry is checked before anything is stored:

1. its note must be signed by the log key this node was given (``log.pub`` beside the keys)
   for the origin ``kpx/<REGION>``;
2. it must extend the newest checkpoint the node stored: the message's consistency proof runs
   from ``previous_size``, which must be that checkpoint's size, to the new size, and must
   verify against both roots. The first checkpoint a node sees is taken on trust (there is
   nothing to compare it with; ``kpx node audit`` checks it against the log later).

A checkpoint that passes is stored and cosigned (C2SP ``tlog-cosignature``, the node's own
Ed25519 key under the name ``kpx/<REGION>/witness/<CODE>``); the cosignature goes back to the
registry as a ``LogCosigned`` event from the node's outbox, in the same transaction. One
that fails is recorded in ``witness_refusals`` and counted — ``inconsistent`` (a fork or a
rewrite: same size with another root, or a proof that does not verify) and
``bad_signature`` raise the ``KpxLogForkOrForgery`` alert — and never touches the stored
checkpoints. ``unverifiable`` (no proof from the node's newest size, e.g. after its database
was restored) is refused and counted without an alert; the audit settles it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from exchange.adapters.postgres import Cursor
from exchange.domain.events import CheckpointNotice, Cosignature
from exchange.errors import BadProof, BadSignature, KeyFileError, MalformedNote
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.tlog import checkpoint, note, proof
from exchange.tlog.checkpoint import Checkpoint
from exchange.wire import topology
from exchange.wire.signing import Signer
from nodes import store

log = logging.getLogger(__name__)

LOG_PUB = "log.pub"  # the log's verifier key line, given to every node

OUTCOMES = ("stored", "duplicate", "inconsistent", "bad_signature", "unverifiable", "malformed")
# "witness", not "node": the nodes' scrape job already labels its targets with node=<CODE>.
CHECKPOINTS = Counter(
    "kpx_witness_checkpoints_total",
    "Log checkpoints a node received as a witness, by outcome.",
    ["witness", "outcome"],
)
TREE_SIZE = Gauge(
    "kpx_witness_tree_size", "Size of the newest log checkpoint a node stored.", ["witness"]
)


def load_log_key(keys_dir: Path) -> note.Verifier:
    """The log's verifier key from ``keys_dir/log.pub``; raises KeyFileError."""
    path = keys_dir / LOG_PUB
    try:
        return note.parse_verifier(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, MalformedNote) as exc:
        raise KeyFileError(f"log verifier key {path}: {exc}") from exc


class Refused(Exception):
    """Internal: why a checkpoint is not stored (outcome label, detail)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


class Witness:
    """Verifies, stores and cosigns the registry's checkpoints for one node."""

    def __init__(
        self,
        code: str,
        region: str,
        log_key: note.Verifier,
        signer: Signer,
        writer: OutboxWriter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.code, self.origin, self.log_key = code, checkpoint.origin_for(region), log_key
        self.cosigner = note.Signer(checkpoint.witness_name(region, code), signer.private_bytes())
        self.writer, self.clock = writer, clock
        for outcome in OUTCOMES:  # at zero from the start, so that increase() sees the first
            CHECKPOINTS.labels(code, outcome)

    def receive(self, cur: Cursor, record: Mapping[str, Any]) -> str:
        """Handle one LogCheckpoint record in the inbox's transaction; returns the outcome."""
        notice = CheckpointNotice.from_record(record)
        try:
            cp = self._check(cur, notice)
        except Refused as refused:
            self._refuse(cur, notice, refused)
            return refused.outcome
        if cp is None:
            outcome = "duplicate"
        else:
            self._store_and_cosign(cur, cp, notice.checkpoint)
            outcome = "stored"
        CHECKPOINTS.labels(self.code, outcome).inc()
        return outcome

    def _check(self, cur: Cursor, notice: CheckpointNotice) -> Checkpoint | None:
        """The checkpoint to store, None if already stored; raises Refused."""
        try:
            cp, _ = checkpoint.open_checkpoint(notice.checkpoint, self.log_key, self.origin)
        except BadSignature as exc:
            raise Refused("bad_signature", str(exc)) from exc
        except MalformedNote as exc:
            raise Refused("malformed", str(exc)) from exc
        same = _stored_root(cur, cp.size)
        if same is not None:
            if same != cp.root:
                raise Refused("inconsistent", f"a second root for tree size {cp.size}")
            return None
        newest = _newest(cur)
        if newest is None:
            return cp  # the first checkpoint: nothing to be consistent with yet
        size, root = newest
        if notice.previous_size != size or cp.size < size:
            raise Refused(
                "unverifiable",
                f"proof runs from size {notice.previous_size}; this node holds size {size}",
            )
        try:
            proof.verify_consistency(size, cp.size, root, cp.root, notice.consistency)
        except BadProof as exc:
            raise Refused("inconsistent", f"from size {size} to {cp.size}: {exc}") from exc
        return cp

    def _store_and_cosign(self, cur: Cursor, cp: Checkpoint, text: str) -> None:
        cur.execute(
            "INSERT INTO witness_checkpoints (tree_size, root_hash, note) VALUES (%s, %s, %s)",
            (cp.size, cp.root, text),
        )
        sig = checkpoint.cosign(cp.body(), self.cosigner, int(self.clock()))
        payload = Cosignature(cp.size, cp.root, sig.line())
        pending = Pending(
            "LogCosigned", payload.to_record(), topology.EVENTS, f"{self.code}.LogCosigned"
        )
        [appended] = self.writer.append_many(cur, [pending])
        subject = f"checkpoint {cp.size}"
        store.record_events(cur, [(appended.event_id, appended.sequence, "LogCosigned", subject)])
        TREE_SIZE.labels(self.code).set(cp.size)

    def _refuse(self, cur: Cursor, notice: CheckpointNotice, refused: Refused) -> None:
        size = _size_of(notice.checkpoint)
        cur.execute(
            "INSERT INTO witness_refusals (tree_size, reason, detail, note) "
            "VALUES (%s, %s, %s, %s)",
            (size, refused.outcome, str(refused), notice.checkpoint),
        )
        CHECKPOINTS.labels(self.code, refused.outcome).inc()
        log.error("node %s: log checkpoint refused (%s): %s", self.code, refused.outcome, refused)


def _stored_root(cur: Cursor, size: int) -> bytes | None:
    cur.execute("SELECT root_hash FROM witness_checkpoints WHERE tree_size = %s", (size,))
    row = cur.fetchone()
    return None if row is None else bytes(row[0])


def _newest(cur: Cursor) -> tuple[int, bytes] | None:
    cur.execute("SELECT tree_size, root_hash FROM witness_checkpoints ORDER BY 1 DESC LIMIT 1")
    row = cur.fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))


def _size_of(text: str) -> int | None:
    try:
        return checkpoint.parse_body(note.parse(text).text).size
    except MalformedNote:
        return None
