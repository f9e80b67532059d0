"""Witnessing end to end on the real RabbitMQ and PostgreSQL, and ``kpx node audit``.

A registry (relay on, log on) and node BW (its relay and inbox, with its witness) run in
threads; ZA and NA publish certificates. BW receives each checkpoint, verifies and cosigns
it; the registry keeps the cosignature and serves it with the checkpoint. The audit of BW
passes; a node that was shown another tree than the registry shows now fails it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.registry import Env, as_user, certificate, issuance, make_env, wait_until

from exchange.adapters.postgres import connect, fetch_all, transaction
from exchange.app.logaudit import audit
from exchange.messaging.outbox import OutboxWriter
from exchange.registry import log as registry_log
from exchange.registry import service
from exchange.tlog import checkpoint, note, tree
from exchange.wire.signing import Keyring
from nodes.operations import Node
from nodes.service import NodeService, migrate
from nodes.witness import Witness, load_log_key


@pytest.fixture(scope="module")
def region(
    make_session_vhost: Any, make_session_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Env, Path, dict[str, str]]]:
    vhost, registry_db = make_session_vhost(), make_session_database()
    env = make_env(vhost.name, vhost.amqp_url, registry_db.url)
    keys = tmp_path_factory.mktemp("keys")
    registry_log.ensure_key(keys, "XS")
    nodes = {code: make_session_database().url for code in ("BW", "NA")}
    for dsn in nodes.values():
        migrate(dsn)
    stop = threading.Event()
    threads = [_registry(env, keys, stop), _node(env, keys, "BW", nodes["BW"], stop)]
    try:
        for serial in range(1, 4):
            for member, dest in (("ZA", "NA"), ("NA", "ZA")):
                env.publisher.send(
                    env.producers.seal(
                        member, issuance(certificate(member, serial, destination=dest))
                    )
                )
        # Two announced checkpoints at least (one per batch that accepted an event): the tests
        # below need an older one to show a late witness; the first batch must land first.
        wait_until(lambda: _announced(env) >= 1, timeout=30, what="a first checkpoint")
        _issue_at(env, "BW", nodes["BW"], count=3)
        wait_until(lambda: _announced(env) >= 2, timeout=30, what="a second checkpoint")
        wait_until(lambda: _cosigned_latest(env), timeout=30, what="BW's cosignature served")
        yield env, keys, nodes
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        env.publisher.close()


def _announced(env: Env) -> int:
    rows = env.query("SELECT count(*) AS n FROM log_checkpoints WHERE announced")
    return int(rows[0]["n"])


def _issue_at(env: Env, code: str, dsn: str, count: int) -> None:
    """Issue certificates through the node itself (its outbox, its relay)."""
    line = json.dumps({"op": "issue", "certificate": ISSUE})
    conn = connect(dsn)
    try:
        node = Node(
            code, env.region, OutboxWriter(env.producers.store, env.producers.signers[code])
        )
        results = list(node.submit(conn, [line] * count))
    finally:
        conn.close()
    assert all(r.ok for r in results), results


ISSUE = {
    "destination": "ZA",
    "origin": {"type": "UNMIXED", "countries": ["BW"]},
    "exporter": {"name": "Exporter", "address": "Gaborone", "country": "BW", "licence_no": "E-1"},
    "importer": {"name": "Importer", "address": "Pretoria", "country": "ZA", "licence_no": "I-1"},
    "date_of_issue": "2026-11-20",
    "date_of_expiry": "2026-12-20",
    "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "10.50",
                 "value_usd": "1920.00", "origin_country": "BW"}],
    "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
}  # fmt: skip


def _registry(env: Env, keys: Path, stop: threading.Event) -> threading.Thread:
    args = (env.dsn, env.registry_url, env.region, env.producers.store, env.registry_signer)
    kwargs = {"log_signer": registry_log.load_key(keys), "batch_size": 10}
    thread = threading.Thread(
        target=service.run_registry, args=(*args, stop), kwargs=kwargs, daemon=True
    )
    thread.start()
    return thread


def _node(env: Env, keys: Path, code: str, dsn: str, stop: threading.Event) -> threading.Thread:
    signer = env.producers.signers[code]
    witness = Witness(
        code, "XS", load_log_key(keys), signer, OutboxWriter(env.producers.store, signer)
    )
    node = NodeService(
        code=code,
        dsn=dsn,
        amqp_url=as_user(env.admin_url, env.user(code)),
        schemas=env.producers.store,
        keyring=_keyring(env),
        senders=frozenset({"XS", "XS-RECONCILER"}),
        witness=witness,
    )
    thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def _keyring(env: Env) -> Keyring:
    return Keyring([env.registry_signer.verify_key])


def _cosigned_latest(env: Env) -> bool:
    rows = env.query(
        "SELECT c.tree_size FROM log_checkpoints c JOIN log_cosignatures s USING (tree_size) "
        "WHERE c.announced AND c.tree_size = (SELECT max(tree_size) FROM log_checkpoints "
        "WHERE announced) AND c.tree_size >= 6"
    )
    return bool(rows)


def kpx_audit(env: Env, keys: Path, nodes: dict[str, str], code: str) -> Result:
    obj = SimpleNamespace(
        registry_dsn=env.dsn,
        node_dsn=lambda c: nodes[c],
        keys_dir=keys,
        trusted_dir=lambda c: keys,
        region=SimpleNamespace(code="XS"),
    )
    return CliRunner().invoke(audit, ["--member", code], obj=obj)


def test_the_served_checkpoint_carries_the_nodes_verified_cosignature(
    region: tuple[Env, Path, dict[str, str]],
) -> None:
    env, keys, _ = region
    conn = connect(env.dsn)
    try:
        served = registry_log.latest_checkpoint_note(conn)
    finally:
        conn.close()
    cp, parsed = checkpoint.open_checkpoint(served, load_log_key(keys), "kpx/XS")
    [cosig] = [s for s in parsed.signatures if s.name == "kpx/XS/witness/BW"]
    bw_key = env.producers.signers["BW"].verify_key.public_key
    verifier = checkpoint.cosigner_verifier(cosig.name, bw_key)
    checkpoint.verify_cosignature(cp.body(), cosig, verifier)


def test_cosignatures_are_accepted_node_events_and_leaves_of_the_log(
    region: tuple[Env, Path, dict[str, str]],
) -> None:
    env, _, nodes = region
    conn = connect(nodes["BW"])
    try:
        wait_until(
            lambda: (
                not fetch_all(
                    conn, "SELECT 1 FROM node_events WHERE registry_state = 'pending' LIMIT 1"
                )
            ),
            what="every cosignature answered",
        )
        states = fetch_all(conn, "SELECT DISTINCT registry_state FROM node_events")
    finally:
        conn.close()
    assert states == [{"registry_state": "accepted"}]
    logged = env.query(
        "SELECT count(*) AS n FROM log_leaves l JOIN event_log e USING (event_id) "
        "WHERE e.event_type = 'LogCosigned'"
    )
    assert logged[0]["n"] >= 1


def test_the_audit_of_an_honest_witness_passes(
    region: tuple[Env, Path, dict[str, str]],
) -> None:
    env, keys, nodes = region
    result = kpx_audit(env, keys, nodes, "BW")
    assert result.exit_code == 0, result.output
    checked = re.search(r"audit of BW passed: (\d+) accepted events", result.output)
    assert checked and int(checked.group(1)) >= 3  # its 3 issues, and cosignatures served


def test_a_node_shown_another_tree_is_caught_by_its_next_audit(
    region: tuple[Env, Path, dict[str, str]],
) -> None:
    """The split view: the registry (it holds the log key) gave NA a tree of its own."""
    env, keys, nodes = region
    fork = tree.MemoryHashes()
    for i in range(3):
        fork.append(b"another history %d" % i)
    forked = checkpoint.Checkpoint("kpx/XS", 3, fork.root())
    text = checkpoint.sign_checkpoint(forked, registry_log.load_key(keys))
    conn = connect(nodes["NA"])
    try:
        witness = Witness(
            "NA",
            "XS",
            load_log_key(keys),
            env.producers.signers["NA"],
            OutboxWriter(env.producers.store, env.producers.signers["NA"]),
        )
        with transaction(conn) as cur:  # the first checkpoint NA ever saw: taken on trust
            assert (
                witness.receive(cur, {"checkpoint": text, "previous_size": 0, "consistency": []})
                == "stored"
            )
    finally:
        conn.close()
    result = kpx_audit(env, keys, nodes, "NA")
    assert result.exit_code == 1
    assert "checkpoint 3 stored by this node is not consistent with the latest" in result.output


def test_a_witness_that_missed_checkpoints_is_anchored_again_by_a_passing_audit(
    region: tuple[Env, Path, dict[str, str]], make_database: Any
) -> None:
    env, keys, nodes = region
    late = make_database().url
    migrate(late)
    signer = env.producers.signers["ZA"]
    witness = Witness(
        "ZA", "XS", load_log_key(keys), signer, OutboxWriter(env.producers.store, signer)
    )
    rows = env.query("SELECT tree_size, note FROM log_checkpoints WHERE announced ORDER BY 1")
    assert len(rows) >= 2
    conn = connect(late)
    try:
        first = {"checkpoint": rows[0]["note"], "previous_size": 0, "consistency": []}
        skipped = rows[-1]["tree_size"]
        with transaction(conn) as cur:
            assert witness.receive(cur, first) == "stored"
        result = kpx_audit(env, keys, {**nodes, "ZA": late}, "ZA")
        assert result.exit_code == 0, result.output
        assert "the witness now verifies from it" in result.output
        with transaction(conn) as cur:
            cur.execute("SELECT max(tree_size) FROM witness_checkpoints")
            assert cur.fetchone()[0] == skipped  # type: ignore[index]
    finally:
        conn.close()


def test_an_audit_against_a_checkpoint_signed_with_another_key_fails(
    region: tuple[Env, Path, dict[str, str]], tmp_path: Path
) -> None:
    env, _, nodes = region
    (tmp_path / "log.pub").write_text(f"{note.generate_signer('kpx/XS').verifier}\n")
    result = kpx_audit(env, tmp_path, nodes, "BW")  # this node was given another log key
    assert result.exit_code == 1
    assert "latest checkpoint: note is signed by no known key" in result.output
