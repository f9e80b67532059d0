"""The registry's log on the real RabbitMQ and PostgreSQL: appended with every decision,
served by ``kpx registry log …``, and any change to storage caught by ``log verify``.

One registry ingests a small workload (issues from three members, a void, a rejected
duplicate) and stops; each tamper test then works on its own copy of that database
(``CREATE DATABASE … TEMPLATE``), so no test depends on another undoing its damage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest
from click.testing import CliRunner, Result
from psycopg2 import sql
from support.registry import (
    Env,
    certificate,
    issuance,
    make_env,
    voiding,
    wait_until,
)
from support.services import unique_name, with_path
from support.witnessing import tamper

from exchange.adapters.postgres import connect, transaction
from exchange.registry import log as registry_log
from exchange.registry import service
from exchange.registry.logcommands import log_group
from exchange.tlog import checkpoint, note, proof, tree


@pytest.fixture(scope="module")
def settled(
    make_session_vhost: Any, make_session_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Env, Path, dict[str, str]]]:
    """A registry database holding a finished workload, and the log key folder."""
    vhost, database = make_session_vhost(), make_session_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    keys = tmp_path_factory.mktemp("keys")
    registry_log.ensure_key(keys, env.region.code)
    sent = _workload(env)
    _run_until_decided(env, keys, len(sent["all"]))
    yield env, keys, sent
    env.publisher.close()


def _workload(env: Env) -> dict[str, str]:
    sent: dict[str, Any] = {"all": []}
    for serial in range(1, 5):
        for member, dest in (("BW", "ZA"), ("ZA", "NA"), ("NA", "BW")):
            cert = certificate(member, serial, destination=dest)
            sealed = env.producers.seal(member, issuance(cert))
            env.publisher.send(sealed)
            sent["all"].append(sealed.event_id)
            sent.setdefault("cert", cert.certificate_id)
            sent.setdefault("issue_event", sealed.event_id)
    void = env.producers.seal("BW", voiding(certificate("BW", 2)))
    twice = env.producers.seal("ZA", issuance(certificate("ZA", 1, destination="BW")))
    for sealed in (void, twice):  # a second, different issue of ZA's first number
        env.publisher.send(sealed)
        sent["all"].append(sealed.event_id)
    sent["void"] = void.event_id
    sent["rejected"] = twice.event_id
    return sent


def _run_until_decided(env: Env, keys: Path, count: int) -> None:
    stop = threading.Event()
    signer = registry_log.load_key(keys)
    args = (env.dsn, env.registry_url, env.region, env.producers.store, env.registry_signer)
    thread = threading.Thread(
        target=service.run_registry,
        args=(*args, stop),
        kwargs={"relay": False, "batch_size": 5, "log_signer": signer},
        daemon=True,
    )
    thread.start()
    try:
        wait_until(lambda: _count(env.dsn, "event_log") >= count, what="every event decided")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _count(dsn: str, table: str) -> int:
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            return int(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def kpx_log(dsn: str, keys: Path, *args: str) -> Result:
    """``kpx registry log ARGS`` against ``dsn`` (the command group, in-process)."""
    obj = SimpleNamespace(registry_dsn=dsn, keys_dir=keys, region=SimpleNamespace(code="XS"))
    return CliRunner().invoke(log_group, list(args), obj=obj)


@pytest.fixture
def copy(settled: tuple[Env, Path, dict[str, str]]) -> Iterator[str]:
    """A private copy of the settled registry database: its DSN."""
    env = settled[0]
    name = unique_name()
    source = env.dsn.rsplit("/", 1)[1].split("?")[0]
    admin = psycopg2.connect(with_path(env.dsn, "postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(source)
                )
            )
        yield with_path(env.dsn, name)
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


def leaf_event(dsn: str, index: int) -> str:
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT event_id::text FROM log_leaves WHERE leaf_index = %s", (index,))
            return str(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


# ------------------------------------------------------------------------- the log itself


def test_every_accepted_event_is_a_leaf_in_commit_order_and_nothing_else_is(
    settled: tuple[Env, Path, dict[str, str]],
) -> None:
    env, _, sent = settled
    leaves = env.query(
        "SELECT l.leaf_index, l.event_id::text AS event_id, e.decision, e.body, l.leaf_hash "
        "FROM log_leaves l JOIN event_log e USING (event_id) ORDER BY l.leaf_index"
    )
    accepted = env.query("SELECT event_id::text FROM event_log WHERE decision = 'ACCEPTED'")
    assert [r["leaf_index"] for r in leaves] == list(range(len(accepted)))
    assert {r["event_id"] for r in leaves} == {r["event_id"] for r in accepted}
    assert sent["rejected"] not in {r["event_id"] for r in leaves}
    assert all(bytes(r["leaf_hash"]) == tree.leaf_hash(bytes(r["body"])) for r in leaves)
    assert len(leaves) == 13  # 12 issues and the void


def test_a_checkpoint_was_signed_after_every_batch_and_the_last_one_covers_the_log(
    settled: tuple[Env, Path, dict[str, str]],
) -> None:
    env, keys, _ = settled
    rows = env.query("SELECT tree_size, note FROM log_checkpoints ORDER BY tree_size")
    assert len(rows) >= 3 and rows[-1]["tree_size"] == 13  # batches of at most 5
    key = kpx_log(env.dsn, keys, "key")
    assert key.exit_code == 0
    verifier = note.parse_verifier(key.output.strip())
    assert verifier.name == "kpx/XS"
    shown = kpx_log(env.dsn, keys, "checkpoint")
    cp, _ = checkpoint.open_checkpoint(shown.output, verifier, "kpx/XS")
    leaves = env.query("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
    assert cp.size == 13
    assert cp.root == tree.merkle_root([bytes(r["leaf_hash"]) for r in leaves])


def test_a_certificate_proof_verifies_with_nothing_but_the_log_key(
    settled: tuple[Env, Path, dict[str, str]],
) -> None:
    env, keys, sent = settled
    result = kpx_log(env.dsn, keys, "proof", sent["cert"], "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    verifier = note.parse_verifier(kpx_log(env.dsn, keys, "key").output.strip())
    cp, _ = checkpoint.open_checkpoint(doc["checkpoint"], verifier, "kpx/XS")
    leaf = note.unb64(doc["leaf"], "leaf")
    [row] = env.query(
        "SELECT body FROM event_log WHERE event_id = %s::uuid", (sent["issue_event"],)
    )
    assert leaf == bytes(row["body"])  # the envelope bytes exactly as received
    path = [note.unb64(h, "hash") for h in doc["inclusion"]]
    assert doc["tree_size"] == cp.size
    proof.verify_inclusion(doc["leaf_index"], cp.size, tree.leaf_hash(leaf), path, cp.root)
    by_event = json.loads(kpx_log(env.dsn, keys, "proof", "--event", sent["void"]).output)
    assert by_event["leaf_index"] == 12


def test_an_event_past_the_announced_checkpoint_is_proved_under_the_newest_signed_one(
    settled: tuple[Env, Path, dict[str, str]], copy: str
) -> None:
    """Announcements to the witnesses come at most once a second; every batch's checkpoint is
    signed and stored all the same, so an event just decided is proved at once."""
    _, keys, sent = settled
    tamper(copy, "UPDATE log_checkpoints SET announced = false WHERE tree_size > 5")
    served, _ = checkpoint.open_checkpoint(
        kpx_log(copy, keys, "checkpoint").output,
        note.parse_verifier(kpx_log(copy, keys, "key").output.strip()),
        "kpx/XS",
    )
    assert served.size <= 5  # the void (leaf 12) lies past what the witnesses were shown
    result = kpx_log(copy, keys, "proof", "--event", sent["void"], "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    verifier = note.parse_verifier(kpx_log(copy, keys, "key").output.strip())
    cp, _ = checkpoint.open_checkpoint(doc["checkpoint"], verifier, "kpx/XS")
    assert doc["tree_size"] == cp.size == 13 and doc["leaf_index"] == 12
    path = [note.unb64(h, "hash") for h in doc["inclusion"]]
    proof.verify_inclusion(12, 13, tree.leaf_hash(note.unb64(doc["leaf"], "leaf")), path, cp.root)
    early = json.loads(kpx_log(copy, keys, "proof", "--event", leaf_event(copy, 0)).output)
    assert early["tree_size"] == served.size  # under the announced one when it holds the leaf


def test_consistency_between_two_signed_checkpoints_verifies(
    settled: tuple[Env, Path, dict[str, str]],
) -> None:
    env, keys, _ = settled
    rows = env.query("SELECT tree_size, root_hash FROM log_checkpoints ORDER BY tree_size")
    (old, old_root), (new, new_root) = (
        (rows[0]["tree_size"], bytes(rows[0]["root_hash"])),
        (rows[-1]["tree_size"], bytes(rows[-1]["root_hash"])),
    )
    result = kpx_log(env.dsn, keys, "consistency", str(old), str(new), "--json")
    doc = json.loads(result.output)
    assert (doc["old_size"], doc["new_size"]) == (old, new)
    path = [note.unb64(h, "hash") for h in doc["proof"]]
    proof.verify_consistency(old, new, old_root, new_root, path)


def test_an_untouched_log_verifies(settled: tuple[Env, Path, dict[str, str]]) -> None:
    env, keys, _ = settled
    result = kpx_log(env.dsn, keys, "verify")
    assert result.exit_code == 0, result.output
    assert "13 leaves" in result.output


def test_tiles_and_entry_bundles_hold_the_leaves(
    settled: tuple[Env, Path, dict[str, str]],
) -> None:
    env, _, _ = settled
    rows = env.query(
        "SELECT l.leaf_hash, e.body FROM log_leaves l JOIN event_log e USING (event_id) "
        "ORDER BY l.leaf_index"
    )
    conn = connect(env.dsn)
    try:
        hashes = registry_log.read_tile(conn, 0, 0, 13)
        bundle = registry_log.read_entries(conn, 0, 13)
    finally:
        conn.close()
    assert hashes == b"".join(bytes(r["leaf_hash"]) for r in rows)
    first = bytes(rows[0]["body"])
    assert bundle[:2] == len(first).to_bytes(2, "big") and bundle[2 : 2 + len(first)] == first


# -------------------------------------------------------------------------------- tampering


def _verify_fails_at(dsn: str, keys: Path, index: int) -> str:
    result = kpx_log(dsn, keys, "verify")
    assert result.exit_code == 1, result.output
    assert f"first bad leaf index: {index}" in result.output, result.output
    return result.output


def test_a_changed_event_body_is_named_by_its_leaf_index(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    event = leaf_event(copy, 3)
    tamper(copy, f"UPDATE event_log SET body = body || '\\x00'::bytea WHERE event_id = '{event}'")
    _verify_fails_at(copy, settled[1], 3)


def test_two_reordered_leaves_are_caught_at_the_first(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    a, b = leaf_event(copy, 4), leaf_event(copy, 6)
    tamper(
        copy,
        "UPDATE log_leaves SET event_id = gen_random_uuid() WHERE leaf_index = 4",
        f"UPDATE log_leaves SET event_id = '{a}' WHERE leaf_index = 6",
        f"UPDATE log_leaves SET event_id = '{b}' WHERE leaf_index = 4",
    )
    _verify_fails_at(copy, settled[1], 4)


def test_a_deleted_event_is_named_by_its_leaf_index(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    event = leaf_event(copy, 5)
    tamper(copy, f"DELETE FROM event_log WHERE event_id = '{event}'")
    _verify_fails_at(copy, settled[1], 5)


def test_a_deleted_leaf_is_named_by_its_index(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    tamper(copy, "DELETE FROM log_leaves WHERE leaf_index = 7")
    _verify_fails_at(copy, settled[1], 7)


def test_a_truncated_log_contradicts_the_last_checkpoint(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    tamper(
        copy,
        "DELETE FROM log_leaves WHERE leaf_index = 12",
        f"DELETE FROM log_hashes WHERE hash_index >= {tree.stored_hash_index(0, 12)}",
        "UPDATE log_head SET tree_size = 12",
    )
    _verify_fails_at(copy, settled[1], 12)


def test_a_rewrite_that_recomputes_every_hash_still_contradicts_the_signed_roots(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    """The careful forger: changes an event and rebuilds leaves and stored hashes to match."""
    conn = connect(copy)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "UPDATE event_log e SET body = body || '\\x01'::bytea FROM log_leaves l "
                "WHERE l.event_id = e.event_id AND l.leaf_index = 2"
            )
            cur.execute(
                "SELECT l.leaf_index, e.body FROM log_leaves l JOIN event_log e "
                "USING (event_id) ORDER BY 1"
            )
            rebuilt = tree.MemoryHashes()
            for index, body in cur.fetchall():
                rebuilt.append(bytes(body))
                cur.execute(
                    "UPDATE log_leaves SET leaf_hash = %s WHERE leaf_index = %s",
                    (tree.leaf_hash(bytes(body)), index),
                )
            cur.execute("DELETE FROM log_hashes")
            for i, h in enumerate(rebuilt.hashes):
                cur.execute("INSERT INTO log_hashes VALUES (%s, %s)", (i, h))
    finally:
        conn.close()
    output = kpx_log(copy, settled[1], "verify").output
    assert "root differs from storage" in output and "log does NOT verify" in output


def test_an_accepted_event_slipped_in_without_a_leaf_is_reported(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    event = settled[2]["rejected"]
    tamper(copy, f"UPDATE event_log SET decision = 'ACCEPTED' WHERE event_id = '{event}'")
    result = kpx_log(copy, settled[1], "verify")
    assert result.exit_code == 1
    assert f"1 accepted event(s) outside the log, e.g. {event}" in result.output


def test_a_checkpoint_signed_with_another_key_is_refused(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    other = note.generate_signer("kpx/XS")
    forged = checkpoint.sign_checkpoint(checkpoint.Checkpoint("kpx/XS", 99, bytes(32)), other)
    conn = connect(copy)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "INSERT INTO log_checkpoints (tree_size, root_hash, note) VALUES (99, %s, %s)",
                (bytes(32), forged),
            )
    finally:
        conn.close()
    result = kpx_log(copy, settled[1], "verify")
    assert result.exit_code == 1
    assert "checkpoint 99: note is signed by no known key" in result.output
    assert "first bad leaf index" not in result.output  # no leaf is wrong: the note is


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        (["registry", "log", "--help"], ["checkpoint", "consistency", "key", "proof", "verify"]),
        (["node", "audit", "--help"], ["--member"]),
    ],
)
def test_the_log_commands_are_part_of_kpx(args: list[str], listed: list[str]) -> None:
    region = Path(__file__).resolve().parents[1] / "deploy" / "region.example.toml"
    kpx = Path(sys.executable).with_name("kpx")
    done = subprocess.run(
        [str(kpx), "--region", str(region), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert all(word in done.stdout for word in listed)


def test_two_registries_on_one_queue_build_one_log_that_verifies(
    make_vhost: Any, make_database: Any, tmp_path: Path
) -> None:
    """Scale-out: the head row lock gives the two consumers' batches consecutive leaves
    (prefetch 10: both get a share of the queue)."""
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    registry_log.ensure_key(tmp_path, env.region.code)
    signer = registry_log.load_key(tmp_path)
    stop = threading.Event()
    args = (env.dsn, env.registry_url, env.region, env.producers.store, env.registry_signer)
    threads = [
        threading.Thread(
            target=service.run_registry,
            args=(*args, stop),
            kwargs={"relay": False, "batch_size": 7, "prefetch": 10, "log_signer": signer},
            daemon=True,
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    try:
        for serial in range(1, 101):
            for member, dest in (("BW", "ZA"), ("ZA", "NA"), ("NA", "BW")):
                cert = certificate(member, serial, destination=dest)
                env.publisher.send(env.producers.seal(member, issuance(cert)), confirm=False)
        wait_until(lambda: _count(env.dsn, "event_log") >= 300, timeout=60, what="300 decided")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        env.publisher.close()
    assert _count(env.dsn, "log_leaves") == 300
    result = kpx_log(env.dsn, tmp_path, "verify")
    assert result.exit_code == 0, result.output


def _leaves(tag: str, n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(event_id=str(uuid.uuid4()), raw=f"{tag}{i}".encode()) for i in range(n)]


def _stored_tree(dsn: str) -> tuple[list[bytes], bytes, bytes]:
    """The leaf hashes in index order, the tree hash of the stored hashes, and the newest
    checkpoint's root."""
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
            leaves = [bytes(r[0]) for r in cur.fetchall()]
            stored = tree.tree_hash(len(leaves), registry_log.reader(cur))
            cur.execute("SELECT root_hash FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1")
            (root,) = cur.fetchone()  # type: ignore[misc]
        return leaves, stored, bytes(root)
    finally:
        conn.close()


def test_a_writer_reuses_its_right_edge_only_while_the_head_holds_the_tree_it_computed(
    copy: str, settled: tuple[Env, Path, dict[str, str]]
) -> None:
    """The writer keeps the right edge of its last batch instead of reading it back. A batch
    of its own that rolled back, followed by another process's batch of the same size, leaves
    the head at the size it remembers but another root: it must read the edge again."""
    signer = registry_log.load_key(settled[1])
    mine, other = registry_log.LogWriter(signer, "XS"), registry_log.LogWriter(signer, "XS")
    before = len(_stored_tree(copy)[0])
    conn = connect(copy)
    try:
        with transaction(conn) as cur:
            mine.append(cur, _leaves("a", 3))  # committed: the edge is remembered
        with pytest.raises(RuntimeError), transaction(conn) as cur:
            mine.append(cur, _leaves("lost", 3))  # remembered, then rolled back
            raise RuntimeError("the batch failed after placing its leaves")
        with transaction(conn) as cur:
            other.append(cur, _leaves("b", 3))  # the size the lost batch would have reached
        with transaction(conn) as cur:
            mine.append(cur, _leaves("c", 2))
        with transaction(conn) as cur:
            mine.append(cur, _leaves("d", 5))  # the remembered edge, reused
    finally:
        conn.close()
    leaves, stored, signed = _stored_tree(copy)
    batches = (("a", 3), ("b", 3), ("c", 2), ("d", 5))
    expected = [tree.leaf_hash(f"{tag}{i}".encode()) for tag, n in batches for i in range(n)]
    assert leaves[before:] == expected
    assert stored == signed == tree.merkle_root(leaves)


def test_checkpoints_go_to_the_witnesses_at_most_once_a_second_and_none_is_left_behind(
    make_session_vhost: Any, make_session_database: Any, tmp_path: Path
) -> None:
    """Batches of two, all in well under a second: each signs its checkpoint, few are
    announced, and the newest reaches the witnesses (the outbox's LogCheckpoint notices) a
    second later with no batch to carry it — while the registry runs, not only at its stop."""
    vhost, database = make_session_vhost(), make_session_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    registry_log.ensure_key(tmp_path, env.region.code)
    for serial in range(1, 5):
        for member, dest in (("BW", "ZA"), ("ZA", "NA"), ("NA", "BW")):
            cert = certificate(member, serial, destination=dest)
            env.publisher.send(env.producers.seal(member, issuance(cert)))
    stop = threading.Event()
    args = (env.dsn, env.registry_url, env.region, env.producers.store, env.registry_signer)
    thread = threading.Thread(
        target=service.run_registry,
        args=(*args, stop),
        kwargs={"relay": False, "batch_size": 2, "log_signer": registry_log.load_key(tmp_path)},
        daemon=True,
    )
    thread.start()
    try:
        wait_until(lambda: _count(env.dsn, "event_log") >= 12, what="every event decided")

        def announced() -> list[int]:
            rows = env.query("SELECT tree_size FROM log_checkpoints WHERE announced")
            return sorted(r["tree_size"] for r in rows)

        wait_until(lambda: announced()[-1:] == [12], timeout=10, what="the newest announced")
        assert thread.is_alive()  # by the announcer, not the stop
        signed = env.query("SELECT count(*) AS n FROM log_checkpoints")[0]["n"]
        assert signed >= 6 and len(announced()) < signed
        notices = env.query(
            "SELECT routing_key, count(*) AS n FROM outbox WHERE event_type = 'LogCheckpoint' "
            "GROUP BY 1 ORDER BY 1"
        )
        # One notice a node an announcement, to the nodes heard from by then (BW's first):
        # the last one reached all three.
        counts = {r["routing_key"]: r["n"] for r in notices}
        assert counts["BW.LogCheckpoint"] == len(announced())
        assert set(counts) == {f"{code}.LogCheckpoint" for code in ("BW", "NA", "ZA")}
        assert all(1 <= n <= len(announced()) for n in counts.values())
    finally:
        stop.set()
        thread.join(timeout=30)
        env.publisher.close()
    assert not thread.is_alive()


def test_a_checkpoint_left_unannounced_by_a_crash_is_announced_at_the_next_start(
    settled: tuple[Env, Path, dict[str, str]], copy: str
) -> None:
    """A registry killed in the second after a throttled batch leaves its checkpoint signed
    but unannounced; the next start sends it with no new event to carry it."""
    env, keys, _ = settled
    tamper(copy, "UPDATE log_checkpoints SET announced = false WHERE tree_size > 5")
    stop = threading.Event()
    args = (copy, env.registry_url, env.region, env.producers.store, env.registry_signer)
    thread = threading.Thread(
        target=service.run_registry,
        args=(*args, stop),
        kwargs={"relay": False, "log_signer": registry_log.load_key(keys)},
        daemon=True,
    )
    thread.start()
    try:

        def served() -> int:
            result = kpx_log(copy, keys, "checkpoint")
            return int(result.output.splitlines()[1])

        wait_until(lambda: served() == 13, timeout=10, what="the newest checkpoint announced")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
