"""A node as a witness of the registry's log, on a real node database.

Checkpoints are made here from a tree in memory and signed with a log key, then handed to
the node's Witness as the inbox would: in the inbox's transaction. A good one is stored and
cosigned (a LogCosigned event in the node's outbox); a forged, forked or unlinkable one is
refused, recorded and counted, and the stored checkpoints stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from exchange.adapters.postgres import Connection, connect, transaction
from exchange.domain.events import CheckpointNotice, Cosignature
from exchange.messaging.outbox import OutboxWriter
from exchange.tlog import checkpoint, note, proof, tree
from exchange.wire.codec import default_store
from exchange.wire.envelope import open_envelope
from exchange.wire.signing import Keyring, Signer, generate_key
from nodes.service import migrate
from nodes.witness import Witness

LOG = note.generate_signer("kpx/XS")


class Log:
    """A log in memory that signs checkpoints as the registry does."""

    def __init__(self, signer: note.Signer = LOG) -> None:
        self.hashes, self.signer, self.sizes = tree.MemoryHashes(), signer, [0]

    def grow(self, n: int) -> dict[str, Any]:
        """Append ``n`` leaves; the LogCheckpoint record the registry would send."""
        for _ in range(n):
            self.hashes.append(self.hashes.size.to_bytes(8, "big"))
        previous = self.sizes[-1]
        self.sizes.append(self.hashes.size)
        return self.notice(previous)

    def notice(self, previous: int) -> dict[str, Any]:
        cp = checkpoint.Checkpoint("kpx/XS", self.hashes.size, self.hashes.root())
        path = proof.prove_consistency(previous, cp.size, self.hashes.read)
        text = checkpoint.sign_checkpoint(cp, self.signer)
        return CheckpointNotice(text, previous, tuple(path)).to_record()


@pytest.fixture
def node_db(database: Any) -> Iterator[Connection]:
    migrate(database.url)
    conn = connect(database.url)
    yield conn
    conn.close()


@pytest.fixture
def bw() -> Signer:
    return generate_key("BW")


@pytest.fixture
def witness(bw: Signer) -> Witness:
    return Witness("BW", "XS", LOG.verifier, bw, OutboxWriter(default_store(), bw), lambda: 1e9)


def receive(conn: Connection, witness: Witness, record: dict[str, Any]) -> str:
    with transaction(conn) as cur:
        return witness.receive(cur, record)


def stored(conn: Connection) -> list[int]:
    with transaction(conn) as cur:
        cur.execute("SELECT tree_size FROM witness_checkpoints ORDER BY 1")
        return [r[0] for r in cur.fetchall()]


def refusals(conn: Connection) -> list[str]:
    with transaction(conn) as cur:
        cur.execute("SELECT reason FROM witness_refusals ORDER BY id")
        return [r[0] for r in cur.fetchall()]


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "kpx_witness_checkpoints_total", {"witness": "BW", "outcome": outcome}
    )
    return value or 0.0


def test_a_consistent_checkpoint_is_stored_and_cosigned_by_the_node_key(
    node_db: Connection, witness: Witness, bw: Signer
) -> None:
    log = Log()
    assert receive(node_db, witness, log.grow(5)) == "stored"  # the first: taken on trust
    assert receive(node_db, witness, log.grow(9)) == "stored"
    assert stored(node_db) == [5, 14]
    with transaction(node_db) as cur:
        cur.execute("SELECT body FROM outbox WHERE event_type = 'LogCosigned' ORDER BY id")
        bodies = [bytes(r[0]) for r in cur.fetchall()]
        cur.execute("SELECT count(*) FROM node_events WHERE event_type = 'LogCosigned'")
        assert cur.fetchone()[0] == 2  # type: ignore[index]
    envelope = open_envelope(default_store(), Keyring([bw.verify_key]), bodies[-1])
    cosigned = Cosignature.from_record(envelope.payload)
    assert (cosigned.tree_size, cosigned.root_hash) == (14, log.hashes.root())
    sig = note.signature_line(cosigned.cosignature)
    assert sig.name == "kpx/XS/witness/BW"
    body = checkpoint.Checkpoint("kpx/XS", 14, log.hashes.root()).body()
    verifier = checkpoint.cosigner_verifier(sig.name, bw.verify_key.public_key)
    assert checkpoint.verify_cosignature(body, sig, verifier) == 1_000_000_000


def test_the_same_checkpoint_twice_is_stored_once(node_db: Connection, witness: Witness) -> None:
    log = Log()
    record = log.grow(3)
    receive(node_db, witness, record)
    assert receive(node_db, witness, record) == "duplicate"
    assert stored(node_db) == [3]


def test_a_forked_log_is_refused_counted_and_never_overwrites(
    node_db: Connection, witness: Witness
) -> None:
    honest, fork = Log(), Log()
    receive(node_db, witness, honest.grow(4))
    fork.grow(4)
    fork.hashes = tree.MemoryHashes()  # the same size, rewritten history
    for i in range(6):
        fork.hashes.append(b"rewritten %d" % i)
    before = counted("inconsistent")
    forged = fork.notice(4)  # claims to extend size 4, but size 4 had another root
    assert receive(node_db, witness, forged) == "inconsistent"
    assert counted("inconsistent") == before + 1
    assert stored(node_db) == [4] and refusals(node_db) == ["inconsistent"]


def test_a_second_root_for_a_stored_size_is_refused(node_db: Connection, witness: Witness) -> None:
    receive(node_db, witness, Log().grow(4))
    other = Log()
    for i in range(4):
        other.hashes.append(b"other %d" % i)
    other.sizes.append(4)
    assert receive(node_db, witness, other.notice(0)) == "inconsistent"
    assert refusals(node_db) == ["inconsistent"]


def test_a_checkpoint_signed_with_another_key_is_refused(
    node_db: Connection, witness: Witness
) -> None:
    log = Log(note.generate_signer("kpx/XS"))
    before = counted("bad_signature")
    assert receive(node_db, witness, log.grow(2)) == "bad_signature"
    assert counted("bad_signature") == before + 1
    assert stored(node_db) == [] and refusals(node_db) == ["bad_signature"]


def test_a_checkpoint_without_a_proof_from_the_stored_size_is_not_stored(
    node_db: Connection, witness: Witness
) -> None:
    log = Log()
    receive(node_db, witness, log.grow(3))
    log.grow(3)  # the node missed the checkpoint of size 6
    record = log.grow(3)
    assert receive(node_db, witness, record) == "unverifiable"
    assert stored(node_db) == [3]
