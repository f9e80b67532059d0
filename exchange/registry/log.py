"""The registry's transparency log in its PostgreSQL (DESIGN §12; tables in sql/003_log.sql).

:meth:`LogWriter.append` runs inside the decision's transaction (``ingest.Ingest.record``):
it takes the ``log_head`` row lock, so batches of concurrent registry processes get
consecutive leaf indexes in commit order; it reads the right edge of the tree (at most
log2(size) stored hashes), stores the new leaves and hashes, and signs a checkpoint. Nothing
here ever reads the whole tree except :mod:`exchange.registry.logcheck`.

Read side, for the commands and the HTTP face (keep these signatures stable):
:func:`latest_checkpoint_note`, :func:`read_tile`, :func:`read_entries`,
:func:`inclusion_proof`, :func:`consistency_proof`.

Errors: NotFound (no such event, no checkpoint yet), MalformedNote (no such tile),
KeyFileError (the log key file), DatabaseUnavailable via the callers' transactions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from exchange.adapters.pgcopy import copy_rows
from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.errors import KeyFileError, MalformedNote, NotFound
from exchange.tlog import checkpoint, note, proof, tile, tree
from exchange.tlog.checkpoint import Checkpoint

KEY_FILE = "log.key"  # in the registry's keys folder: the PRIVATE+KEY note signer line
PUB_FILE = "log.pub"  # its verifier key line, for the nodes (nodes/witness.py reads it)


@dataclass(frozen=True, slots=True)
class Appended:
    """What one batch added: the new checkpoint, its note, and the last announced size."""

    checkpoint: Checkpoint
    note: str
    previous_size: int  # of the newest checkpoint announced to the witnesses
    hashes: tree.HashReader  # the stored hashes and the batch's: valid in its transaction

    def consistency(self) -> list[bytes]:
        """The consistency proof from ``previous_size`` to the new size. Computed only when
        the checkpoint is announced (at most once a second), not for every batch."""
        return proof.prove_consistency(self.previous_size, self.checkpoint.size, self.hashes)


class Leaf(Protocol):
    """What the log needs of an accepted event (``policy.Event`` is one)."""

    @property
    def event_id(self) -> str: ...

    @property
    def raw(self) -> bytes: ...


# Called with the new checkpoint and the batch's leaves; True if it announced the checkpoint.
Announce = Callable[[Cursor, Appended, Sequence[Any]], bool]


class LogWriter:
    """Appends accepted events and signs checkpoints, inside the caller's transaction.

    ``announce`` (when given) is called with the new checkpoint and the batch's leaves, in
    the same transaction: it keeps the cosignatures among them and sends the checkpoint to
    the witnesses (exchange/registry/witnessing.py).
    """

    def __init__(self, signer: note.Signer, origin: str, announce: Announce | None = None):
        self.signer, self.origin, self.announce = signer, origin, announce
        # The right edge this process last computed, with its tree's size and root: reused
        # while the head still holds that size and root (so its own batches read no hashes),
        # read again when another process appended or a rolled-back batch left it ahead.
        self._edge: tuple[int, bytes, list[bytes]] | None = None

    def append(self, cur: Cursor, leaves: Sequence[Leaf]) -> Appended | None:
        """Append the events' envelope bytes in order and checkpoint them; None when there
        are none. :meth:`place` then :meth:`checkpoint`, for a caller with nothing between."""
        placed = self.place(cur, leaves)
        if placed is not None:
            self.checkpoint(cur, placed, leaves)
        return placed

    def place(self, cur: Cursor, leaves: Sequence[Leaf]) -> Appended | None:
        """Append the leaves and sign their checkpoint, not yet stored nor announced; None
        when there are none. The caller writes what must reach the nodes first (the batch's
        decisions, which name their leaves), then calls :meth:`checkpoint`."""
        if not leaves:
            return None
        # The head's root is its checkpoint's: every batch stores one at the size it reached.
        cur.execute(
            "SELECT h.tree_size, c.root_hash FROM log_head h LEFT JOIN log_checkpoints c "
            "ON c.tree_size = h.tree_size FOR UPDATE OF h"
        )
        size, root = cur.fetchone()  # type: ignore[misc]
        edge = tree.RightEdge(size, self._edge_hashes(cur, size, root))
        rows: list[tuple[int, str, bytes]] = []
        stored: list[tuple[int, bytes]] = []
        for event in leaves:
            leaf = tree.leaf_hash(event.raw)
            rows.append((edge.size, event.event_id, leaf))
            stored += edge.append(leaf)
        new = Checkpoint(self.origin, edge.size, edge.root())
        self._edge = (new.size, new.root, [h for _, h in edge.edge])
        text = checkpoint.sign_checkpoint(new, self.signer)
        # Plain inserts of new keys: COPY, not execute_values (2.4x fewer server µs a row
        # measured here); a key already present still fails the transaction, as an INSERT.
        copy_rows(cur, "log_leaves", ("leaf_index", "event_id", "leaf_hash"), rows)
        copy_rows(cur, "log_hashes", ("hash_index", "hash"), stored)
        # One round trip: the subquery runs after the row lock was taken (a new statement,
        # a new snapshot), so it sees every checkpoint committed before this batch's turn.
        cur.execute(
            "UPDATE log_head SET tree_size = %s "
            "RETURNING (SELECT max(tree_size) FROM log_checkpoints WHERE announced)",
            (edge.size,),
        )
        (announced_size,) = cur.fetchone()  # type: ignore[misc]
        previous = 0 if announced_size is None else int(announced_size)
        return Appended(new, text, previous, _overlay(cur, dict(stored)))

    def _edge_hashes(self, cur: Cursor, size: int, root: bytes | None) -> list[bytes]:
        """The right edge of the tree of ``size`` leaves whose root is ``root``: the one this
        process computed last when size and root match (the same tree), else read."""
        if self._edge is not None and root is not None:
            cached_size, cached_root, hashes = self._edge
            if cached_size == size and cached_root == bytes(root):
                return list(hashes)
        return read_hashes(cur, tree.range_indexes(0, size))

    def checkpoint(self, cur: Cursor, appended: Appended, leaves: Sequence[Leaf]) -> None:
        """Store the checkpoint :meth:`place` signed, announced to the witnesses or not."""
        announced = self.announce(cur, appended, leaves) if self.announce else True
        new = appended.checkpoint
        cur.execute(
            "INSERT INTO log_checkpoints (tree_size, root_hash, note, announced) "
            "VALUES (%s, %s, %s, %s)",
            (new.size, new.root, appended.note, announced),
        )


def read_hashes(cur: Cursor, indexes: Sequence[int]) -> list[bytes]:
    """Stored hashes by index, in the order asked; raises NotFound if one is missing."""
    if not indexes:
        return []
    cur.execute(
        "SELECT hash_index, hash FROM log_hashes WHERE hash_index = ANY(%s)", (list(indexes),)
    )
    found = {index: bytes(h) for index, h in cur.fetchall()}
    try:
        return [found[i] for i in indexes]
    except KeyError as exc:
        raise NotFound(f"stored hash {exc.args[0]} is missing from log_hashes") from exc


def _overlay(cur: Cursor, fresh: dict[int, bytes]) -> tree.HashReader:
    """A reader that sees this batch's hashes before they are read back from the table."""

    def read(indexes: Sequence[int]) -> list[bytes]:
        missing = [i for i in indexes if i not in fresh]
        known = dict(zip(missing, read_hashes(cur, missing), strict=True))
        return [fresh[i] if i in fresh else known[i] for i in indexes]

    return read


def reader(cur: Cursor) -> tree.HashReader:
    """A HashReader over ``log_hashes``."""
    return lambda indexes: read_hashes(cur, indexes)


# --- the log key ------------------------------------------------------------------------


def key_path(keys_dir: Path) -> Path:
    """Where ``kpx region init`` keeps the log's signer key."""
    return keys_dir / KEY_FILE


def ensure_key(keys_dir: Path, region: str) -> bool:
    """Generate the log key under the name ``kpx/<REGION>`` if there is none; True if new."""
    path = key_path(keys_dir)
    if path.exists():
        if not (keys_dir / PUB_FILE).exists():
            (keys_dir / PUB_FILE).write_text(f"{load_key(keys_dir).verifier}\n", "ascii")
        return False
    signer = note.generate_signer(checkpoint.origin_for(region))
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(f"{signer}\n")
    (keys_dir / PUB_FILE).write_text(f"{signer.verifier}\n", "ascii")
    return True


def load_key(keys_dir: Path) -> note.Signer:
    """The log's signer; raises KeyFileError naming the file."""
    path = key_path(keys_dir)
    try:
        return note.parse_signer(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, MalformedNote) as exc:
        raise KeyFileError(f"log key {path}: {exc} (run `kpx region init`)") from exc


# --- the read side ----------------------------------------------------------------------


def latest_checkpoint(conn: Connection) -> tuple[Checkpoint, str]:
    """The newest served checkpoint and its note (without cosignatures); raises NotFound."""
    with transaction(conn) as cur:
        return _latest(cur)


def _latest(cur: Cursor) -> tuple[Checkpoint, str]:
    cur.execute(
        "SELECT tree_size, root_hash, note FROM log_checkpoints WHERE announced "
        "ORDER BY 1 DESC LIMIT 1"
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound("the log has no checkpoint yet: no event was accepted")
    size, root, text = row
    return Checkpoint(checkpoint.parse_body(note.parse(text).text).origin, size, bytes(root)), text


def latest_checkpoint_note(conn: Connection) -> str:
    """The newest served checkpoint's note with every cosignature the registry holds for it."""
    with transaction(conn) as cur:
        cp, text = _latest(cur)
        return _cosigned(cur, cp.size, text)


def _cosigned(cur: Cursor, size: int, text: str) -> str:
    """The note ``text`` of checkpoint ``size`` with the cosignatures held for it."""
    cur.execute("SELECT line FROM log_cosignatures WHERE tree_size = %s ORDER BY witness", (size,))
    return text + "".join(row[0] for row in cur.fetchall())


def checkpoint_note(conn: Connection, size: int) -> str:
    """The note of the checkpoint of exactly ``size`` leaves; raises NotFound."""
    rows = _query(conn, "SELECT note FROM log_checkpoints WHERE tree_size = %s", (size,))
    if not rows:
        raise NotFound(f"the registry signed no checkpoint of size {size}")
    return str(rows[0][0])


def read_tile(conn: Connection, level: int, index: int, width: int) -> bytes:
    """A C2SP tlog-tiles hash tile (width × 32 bytes); raises MalformedNote if the tree does
    not have that tile (yet)."""
    wanted = tile.Tile(level, index, width)
    with transaction(conn) as cur:
        cp, _ = _latest(cur)
        if tile.tile_for_size(level, index, cp.size).width < width:
            raise MalformedNote(f"tile {wanted.path()} is beyond the latest checkpoint")
        return b"".join(read_hashes(cur, wanted.hash_indexes()))


def read_entries(conn: Connection, index: int, width: int) -> bytes:
    """A C2SP entry bundle: the envelope bytes of leaves ``index*256`` onwards."""
    start = index * tile.FULL
    rows = _query(
        conn,
        "SELECT l.leaf_index, e.body FROM log_leaves l JOIN event_log e USING (event_id) "
        "WHERE l.leaf_index >= %s AND l.leaf_index < %s ORDER BY 1",
        (start, start + width),
    )
    if len(rows) != width:
        raise MalformedNote(f"entry bundle {index} of width {width} is not in the log")
    return tile.entry_bundle([bytes(body) for _, body in rows])


def _query(conn: Connection, sql: str, params: Any) -> list[tuple[Any, ...]]:
    with transaction(conn) as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def leaf_of_event(conn: Connection, event_id: str) -> tuple[int, bytes]:
    """``(leaf index, envelope bytes)`` of an accepted event; raises NotFound."""
    rows = _query(
        conn,
        "SELECT l.leaf_index, e.body FROM log_leaves l JOIN event_log e USING (event_id) "
        "WHERE l.event_id = %s::uuid",
        (event_id,),
    )
    if not rows:
        raise NotFound(f"event {event_id} is not in the log")
    return int(rows[0][0]), bytes(rows[0][1])


def issuance_event(conn: Connection, certificate_id: str) -> str:
    """The event id of a certificate's accepted CertificateIssued; raises NotFound."""
    rows = _query(
        conn,
        "SELECT l.event_id::text FROM event_log e JOIN log_leaves l USING (event_id) "
        "WHERE e.certificate_id = %s AND e.event_type = 'CertificateIssued' "
        "ORDER BY l.leaf_index LIMIT 1",
        (certificate_id,),
    )
    if not rows:
        raise NotFound(f"no accepted CertificateIssued for {certificate_id!r} in the log")
    return str(rows[0][0])


def inclusion_proof(conn: Connection, event_id: str) -> dict[str, Any]:
    """§12's proof document of an accepted event against the latest checkpoint — the newest
    announced, or when the event came after it (announcements are at most one a second), the
    newest the registry signed: every batch's checkpoint is signed and stored, so an event
    can be proved as soon as its decision is out."""
    index, body = leaf_of_event(conn, event_id)
    with transaction(conn) as cur:
        served, text = _latest(cur)
        size = served.size
        if index >= size:
            cur.execute(
                "SELECT tree_size, note FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1"
            )
            size, text = cur.fetchone()  # type: ignore[misc]
        path = proof.prove_inclusion(index, size, reader(cur))
        cosigned = _cosigned(cur, size, text)
    return {
        "leaf_index": index,
        "tree_size": size,
        "leaf": note.b64(body),
        "inclusion": [note.b64(h) for h in path],
        "checkpoint": cosigned,
    }


def consistency_proof(conn: Connection, old: int, new: int) -> dict[str, Any]:
    """§12's consistency document between two tree sizes the log has reached."""
    with transaction(conn) as cur:
        cp, _ = _latest(cur)
        if new > cp.size:
            raise NotFound(f"the log has {cp.size} leaves, fewer than {new}")
        path = proof.prove_consistency(old, new, reader(cur))
    return {"old_size": old, "new_size": new, "proof": [note.b64(h) for h in path]}


def record_cosignature(cur: Cursor, size: int, witness: str, line: str) -> bool:
    """Keep a witness's cosignature line for checkpoint ``size``; False if already held."""
    cur.execute(
        "INSERT INTO log_cosignatures (tree_size, witness, line) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING",
        (size, witness, line),
    )
    return bool(cur.rowcount)
