"""Witnessing end to end on the real RabbitMQ and PostgreSQL, and ``kpx node audit``.

A registry (relay on, log on) and node BW (its relay and inbox, with its witness) run in
threads; ZA and NA publish certificates. BW receives each checkpoint, verifies and cosigns
it; the registry keeps the cosignature and serves it with the checkpoint. BW stores the leaf
index of each of its accepted events. The audit of BW, over the registry's portal (its
``/log`` tiles), passes; a node that was shown another tree than the registry shows now fails
it. test_audit_http tampers with the log and its HTTP face.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.registry import Env, certificate, issuance, make_env, wait_until
from support.witnessing import issue_at, serve_portal, start_node, start_registry

from exchange.adapters.postgres import connect, fetch_all, transaction
from exchange.app.logaudit import audit
from exchange.messaging.outbox import OutboxWriter
from exchange.registry import log as registry_log
from exchange.tlog import checkpoint, note, tree
from nodes.service import migrate
from nodes.witness import Witness, load_log_key

Region = tuple[Env, Path, dict[str, str], str]  # env, log key folder, node DSNs, portal URL


@pytest.fixture(scope="module")
def region(
    make_session_vhost: Any, make_session_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Region]:
    vhost, registry_db = make_session_vhost(), make_session_database()
    env = make_env(vhost.name, vhost.amqp_url, registry_db.url)
    keys = tmp_path_factory.mktemp("keys")
    registry_log.ensure_key(keys, "XS")
    nodes = {code: make_session_database().url for code in ("BW", "NA")}
    for dsn in nodes.values():
        migrate(dsn)
    stop = threading.Event()
    threads = [start_registry(env, keys, stop), start_node(env, keys, "BW", nodes["BW"], stop)]
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
        issue_at(env, "BW", nodes["BW"], count=3)
        wait_until(lambda: _announced(env) >= 2, timeout=30, what="a second checkpoint")
        wait_until(lambda: _cosigned_latest(env), timeout=30, what="BW's cosignature served")
        with serve_portal(env) as url:
            yield env, keys, nodes, url
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        env.publisher.close()


def _announced(env: Env) -> int:
    rows = env.query("SELECT count(*) AS n FROM log_checkpoints WHERE announced")
    return int(rows[0]["n"])


def _cosigned_latest(env: Env) -> bool:
    rows = env.query(
        "SELECT c.tree_size FROM log_checkpoints c JOIN log_cosignatures s USING (tree_size) "
        "WHERE c.announced AND c.tree_size = (SELECT max(tree_size) FROM log_checkpoints "
        "WHERE announced) AND c.tree_size >= 6"
    )
    return bool(rows)


def kpx_audit(url: str, keys: Path, nodes: dict[str, str], code: str) -> Result:
    """``kpx node audit --member CODE`` with the portal at ``url`` as the region's public URL."""
    obj = SimpleNamespace(
        node_dsn=lambda c: nodes[c],
        trusted_dir=lambda c: keys,
        region=SimpleNamespace(code="XS", public_url=url),
    )
    return CliRunner().invoke(audit, ["--member", code], obj=obj)


def test_the_served_checkpoint_carries_the_nodes_verified_cosignature(
    region: Region,
) -> None:
    env, keys, _, _ = region
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
    region: Region,
) -> None:
    env, _, nodes, _ = region
    conn = connect(nodes["BW"])
    try:
        # One read for the wait and the verdict: a checkpoint announced in between would add
        # a cosignature, pending for a moment, to a second read. A refused cosignature never
        # becomes accepted, so it fails the wait.
        wait_until(
            lambda: (
                fetch_all(conn, "SELECT DISTINCT registry_state FROM node_events")
                == [{"registry_state": "accepted"}]
            ),
            what="every cosignature accepted",
        )
    finally:
        conn.close()
    logged = env.query(
        "SELECT count(*) AS n FROM log_leaves l JOIN event_log e USING (event_id) "
        "WHERE e.event_type = 'LogCosigned'"
    )
    assert logged[0]["n"] >= 1


def test_each_accepted_event_is_stored_with_its_leaf_index_in_the_registrys_log(
    region: Region,
) -> None:
    env, _, nodes, _ = region
    conn = connect(nodes["BW"])
    try:
        wait_until(
            lambda: not fetch_all(conn, "SELECT 1 FROM node_events WHERE registry_state = "
                                  "'pending' LIMIT 1"),
            what="every BW event answered",
        )  # fmt: skip
        rows = fetch_all(
            conn,
            "SELECT event_id::text, event_type, leaf_index FROM node_events "
            "WHERE registry_state = 'accepted'",
        )
    finally:
        conn.close()
    registry = connect(env.dsn)
    try:
        logged = {r["event_id"]: registry_log.leaf_of_event(registry, r["event_id"])[0]
                  for r in rows}  # fmt: skip
    finally:
        registry.close()
    assert {r["event_type"] for r in rows} >= {"CertificateIssued", "LogCosigned"}
    assert {r["event_id"]: r["leaf_index"] for r in rows} == logged


def test_the_audit_of_an_honest_witness_passes(
    region: Region,
) -> None:
    _, keys, nodes, url = region
    result = kpx_audit(url, keys, nodes, "BW")
    assert result.exit_code == 0, result.output
    checked = re.search(r"audit of BW passed: (\d+) accepted events", result.output)
    assert checked and int(checked.group(1)) >= 3  # its 3 issues, and cosignatures served


def test_a_node_shown_another_tree_is_caught_by_its_next_audit(
    region: Region,
) -> None:
    """The split view: the registry (it holds the log key) gave NA a tree of its own."""
    env, keys, nodes, url = region
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
    result = kpx_audit(url, keys, nodes, "NA")
    assert result.exit_code == 1
    assert "checkpoint 3 stored by this node is not consistent with the latest" in result.output


def test_a_witness_that_missed_checkpoints_is_anchored_again_by_a_passing_audit(
    region: Region, make_database: Any
) -> None:
    env, keys, nodes, url = region
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
        result = kpx_audit(url, keys, {**nodes, "ZA": late}, "ZA")
        assert result.exit_code == 0, result.output
        assert "the witness now verifies from it" in result.output
        with transaction(conn) as cur:
            cur.execute("SELECT max(tree_size) FROM witness_checkpoints")
            assert cur.fetchone()[0] == skipped  # type: ignore[index]
    finally:
        conn.close()


def test_an_audit_against_a_checkpoint_signed_with_another_key_fails(
    region: Region, tmp_path: Path
) -> None:
    _, _, nodes, url = region
    (tmp_path / "log.pub").write_text(f"{note.generate_signer('kpx/XS').verifier}\n")
    result = kpx_audit(url, tmp_path, nodes, "BW")  # this node was given another log key
    assert result.exit_code == 1
    assert "latest checkpoint: note is signed by no known key" in result.output
