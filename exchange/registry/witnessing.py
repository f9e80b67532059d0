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
  previous announced checkpoint — at most once every ``every`` seconds (one second by
  default). A batch of only cosignatures is checkpointed but not announced: announcing it
  would ask for cosignatures of cosignatures, for ever; the next batch's checkpoint covers
  those leaves.

Why at most once a second: each announcement costs every node a verification, a cosignature,
an event back, and the registry that event's decision — at half load, with batches that close
at once, as much work as the certificates themselves. The checkpoints of the batches in between
are signed and stored as always (every one proves its events); the :class:`Announcer` (a
thread of ``kpx registry run``) sends the newest of them when a second has passed without a
batch to carry it, so a witness sees every event under a checkpoint at most ~1 s after its
decision, and a checkpoint's consistency proof spans all the ones it skipped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter

from exchange.adapters.postgres import Connection, Cursor, connect, transaction
from exchange.adapters.retry import run_until_stopped
from exchange.domain.events import CheckpointNotice, Cosignature
from exchange.errors import MalformedNote
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.registry.log import Appended, reader, record_cosignature
from exchange.tlog import checkpoint, note, proof
from exchange.wire import topology

log = logging.getLogger(__name__)

ANNOUNCE_EVERY = 1.0  # seconds: at most one checkpoint to the witnesses this often

COSIGNATURES = Counter(
    "kpx_log_cosignatures_total",
    "Cosignatures of log checkpoints the registry received, by witness and outcome.",
    ["witness", "outcome"],  # outcome: kept | duplicate | invalid
)


class Witnessing:
    """Announces checkpoints to the nodes and keeps the cosignatures they return."""

    def __init__(
        self,
        region: str,
        nodes: Iterable[str],
        outbox: OutboxWriter,
        every: float = ANNOUNCE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region, self.nodes, self.outbox = region, sorted(nodes), outbox
        self.every, self._clock = every, clock
        self._last = -math.inf  # when this process last announced
        # A batch's checkpoint was left for the Announcer (True at start: a checkpoint the
        # last run left unannounced is looked for once).
        self.pending = True

    def __call__(self, cur: Cursor, appended: Appended, leaves: Sequence[Any]) -> bool:
        """The LogWriter's ``announce`` hook; True if the checkpoint went to the nodes."""
        cosigned = [e for e in leaves if isinstance(e.payload, Cosignature)]
        for event in cosigned:
            outcome = self._keep(cur, event.producer, event.payload)
            COSIGNATURES.labels(event.producer, outcome).inc()
        if len(cosigned) == len(leaves):
            return False
        if not self.due():
            self.pending = True
            return False
        self._announce(cur, appended.note, appended.previous_size, appended.consistency())
        return True

    def due(self) -> bool:
        """Whether ``every`` seconds have passed since this process last announced."""
        return self._clock() - self._last >= self.every

    def announce_pending(self, cur: Cursor) -> int | None:
        """Announce the newest checkpoint if events other than cosignatures were logged since
        the last one announced; the tree size announced, or None. Its own transaction, under
        the log's head lock (so no batch appends meanwhile)."""
        cur.execute("SELECT tree_size FROM log_head FOR UPDATE")
        cur.execute("SELECT max(tree_size) FROM log_checkpoints WHERE announced")
        (announced,) = cur.fetchone()  # type: ignore[misc]
        previous = 0 if announced is None else int(announced)
        cur.execute(
            "SELECT tree_size, note FROM log_checkpoints WHERE tree_size > %s "
            "ORDER BY tree_size DESC LIMIT 1",
            (previous,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        size, text = int(row[0]), str(row[1])
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM log_leaves l JOIN event_log e USING (event_id)"
            " WHERE l.leaf_index >= %s AND l.leaf_index < %s AND e.event_type <> %s)",
            (previous, size, Cosignature.EVENT_TYPE),
        )
        if not cur.fetchone()[0]:  # type: ignore[index]
            return None  # only cosignatures since: nothing for the witnesses
        consistency = proof.prove_consistency(previous, size, reader(cur))
        self._announce(cur, text, previous, consistency)
        cur.execute("UPDATE log_checkpoints SET announced = true WHERE tree_size = %s", (size,))
        return size

    def _announce(
        self, cur: Cursor, text: str, previous: int, consistency: Sequence[bytes]
    ) -> None:
        """The checkpoint ``text`` on kpx.notify to every node that has taken part."""
        self._last = self._clock()
        cur.execute(
            "SELECT producer FROM producer_progress WHERE producer = ANY(%s)", (self.nodes,)
        )
        active = sorted(row[0] for row in cur.fetchall())
        notice = CheckpointNotice(text, previous, tuple(consistency)).to_record()
        self.outbox.append_many(
            cur,
            [
                Pending("LogCheckpoint", notice, topology.NOTIFY, f"{code}.LogCheckpoint")
                for code in active
            ],
        )

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


class Announcer:
    """Sends the checkpoint a throttled batch left behind (``kpx registry run``'s thread).

    Looks every ``every / 4`` seconds; when a batch's checkpoint was left for it and a second
    has passed since the last announcement, announces the newest checkpoint in a transaction
    of its own. Nothing is lost if it stops or the database is away: the checkpoints are
    stored, and the next announcement, by a batch or by this thread after a restart, spans
    them.
    """

    def __init__(self, dsn: str, witnessing: Witnessing) -> None:
        self.dsn, self.witnessing = dsn, witnessing

    def run(self, stop: threading.Event) -> None:
        """Announce until ``stop`` is set, reconnecting after a lost database."""
        run_until_stopped(stop, log, "checkpoint announcer", self._announce)

    def _announce(self, stop: threading.Event) -> None:
        conn = connect(self.dsn, application_name="kpx-registry-announcer")
        try:
            while not stop.wait(self.witnessing.every / 4):
                if self.witnessing.due():
                    self._send(conn)
        finally:
            conn.close()

    def last(self, conn: Connection) -> None:
        """At a clean stop: announce what the last batches left behind, so a stopped registry
        serves a checkpoint of its whole log (``run_consumer``'s ``stopping``)."""
        self._send(conn)

    def _send(self, conn: Connection) -> None:
        """Announce the newest checkpoint on ``conn`` if a batch left one pending."""
        witnessing = self.witnessing
        if not witnessing.pending:
            return
        witnessing.pending = False  # before: a batch may leave another meanwhile
        try:
            with transaction(conn) as cur:
                size = witnessing.announce_pending(cur)
        except BaseException:
            witnessing.pending = True
            raise
        if size is not None:
            log.debug("log: checkpoint %d announced after a quiet second", size)

    def thread(self, stop: threading.Event) -> threading.Thread:
        """The announcer on a daemon thread (not started)."""
        return threading.Thread(target=self.run, args=(stop,), name="announcer", daemon=True)
