"""The registry's side of witnessing (DESIGN §12): checkpoints out, cosignatures in.

Called by :class:`exchange.registry.log.LogWriter` in the decision's transaction, after a
batch's leaves were appended and its checkpoint signed:

- the batch's accepted ``LogCosigned`` events (node events like any other: signed, sequenced,
  and leaves of the log themselves) are checked against the checkpoint they name and the
  node's registered keys; a valid one is kept in ``log_cosignatures`` and served with the
  checkpoint, an invalid one is logged and counted, never served;
- unless the batch held nothing but cosignatures, the checkpoint goes on ``kpx.notify`` to
  every node that has taken part (sent the registry at least one event: a node that never
  ran would only pile checkpoints up in its queue), with the consistency proof from the
  previous announced checkpoint. A batch of only
  cosignatures is checkpointed but not announced: announcing it would ask for cosignatures of
  cosignatures, for ever; the next batch's checkpoint covers those leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import Counter

from exchange.adapters.postgres import Cursor
from exchange.domain.events import CheckpointNotice, Cosignature
from exchange.errors import MalformedNote
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.registry.log import Appended, record_cosignature
from exchange.tlog import checkpoint, note
from exchange.wire import topology

log = logging.getLogger(__name__)

COSIGNATURES = Counter(
    "kpx_log_cosignatures_total",
    "Cosignatures of log checkpoints the registry received, by witness and outcome.",
    ["witness", "outcome"],  # outcome: kept | duplicate | invalid
)


class Witnessing:
    """Announces checkpoints to the nodes and keeps the cosignatures they return."""

    def __init__(self, region: str, nodes: Iterable[str], outbox: OutboxWriter) -> None:
        self.region, self.nodes, self.outbox = region, sorted(nodes), outbox

    def __call__(self, cur: Cursor, appended: Appended, leaves: Sequence[Any]) -> bool:
        """The LogWriter's ``announce`` hook; True if the checkpoint went to the nodes."""
        cosigned = [e for e in leaves if isinstance(e.payload, Cosignature)]
        for event in cosigned:
            outcome = self._keep(cur, event.producer, event.payload)
            COSIGNATURES.labels(event.producer, outcome).inc()
        if len(cosigned) == len(leaves):
            return False
        cur.execute(
            "SELECT producer FROM producer_progress WHERE producer = ANY(%s)", (self.nodes,)
        )
        active = sorted(row[0] for row in cur.fetchall())
        notice = CheckpointNotice(
            appended.note, appended.previous_size, tuple(appended.consistency)
        ).to_record()
        self.outbox.append_many(
            cur,
            [
                Pending("LogCheckpoint", notice, topology.NOTIFY, f"{code}.LogCheckpoint")
                for code in active
            ],
        )
        return True

    def _keep(self, cur: Cursor, producer: str, cosigned: Cosignature) -> str:
        cur.execute("SELECT note FROM log_checkpoints WHERE tree_size = %s", (cosigned.tree_size,))
        row = cur.fetchone()
        try:
            if row is None:
                raise MalformedNote(f"no checkpoint of size {cosigned.tree_size}")
            body = note.parse(row[0]).text
            sig = note.signature_line(cosigned.cosignature)
            name = checkpoint.witness_name(self.region, producer)
            if sig.name != name:
                raise MalformedNote(f"cosigner {sig.name!r} is not {name!r}")
            self._verify(cur, producer, body, sig)
        except MalformedNote as exc:
            log.warning("log: cosignature from %s set aside: %s", producer, exc)
            return "invalid"
        kept = record_cosignature(cur, cosigned.tree_size, producer, sig.line())
        return "kept" if kept else "duplicate"

    def _verify(self, cur: Cursor, producer: str, body: str, sig: note.Signature) -> None:
        """Any registered key of the producer may have cosigned (keys rotate)."""
        cur.execute("SELECT public_key FROM authority_keys WHERE producer = %s", (producer,))
        for (public_key,) in cur.fetchall():
            verifier = checkpoint.cosigner_verifier(sig.name, bytes(public_key))
            try:
                checkpoint.verify_cosignature(body, sig, verifier)
                return
            except MalformedNote:
                continue
        raise MalformedNote(f"cosignature of {sig.name!r} verifies with no key of {producer}")
