"""Issue 11, item 10: dead letters are stored in the registry's database and re-injected by
index, not by scanning the queue.

Before: re-injecting one id read the whole of ``kpx.registry.dead`` (2 minutes at 38,000
messages). Now the registry moves every dead letter into ``dead_letters`` (acked after the
commit) and re-injection reads the chosen rows by index. Measured here by what PostgreSQL
counted for the table and what the broker holds, never by timing; the figures are in
benchmarks/deadletters_bench.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pika.spec import BasicProperties
from prometheus_client import REGISTRY
from support.registry import Env, depth, make_env, wait_until

from exchange.adapters.postgres import Connection, connect, transaction
from exchange.registry import deadmover, deadstore, reinjection
from exchange.registry.deadletters import Status
from exchange.wire import topology


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Env:
    vhost, database = make_vhost(), make_database()
    return make_env(vhost.name, vhost.amqp_url, database.url)


@pytest.fixture
def db(env: Env) -> Iterator[Connection]:
    """A connection to the registry database; the env's publisher closed after the test."""
    conn = connect(env.dsn)
    yield conn
    conn.close()
    env.publisher.close()


def dead_letter_many(
    env: Env, count: int, queue: str = topology.REGISTRY_QUEUE, key: str = "BW.CertificateIssued"
) -> list[str]:
    """Publish ``count`` dead letters into kpx.dead as the consumer of ``queue`` would; their
    message ids. One confirm at the end: the queue holds them all when this returns."""
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(count)]
    conn = pika.BlockingConnection(pika.URLParameters(env.registry_url))
    try:
        channel = conn.channel()
        for message_id in ids[:-1]:
            channel.basic_publish(topology.DEAD, key, _body(message_id),
                                  _props(message_id, queue, key))  # fmt: skip
        channel.confirm_delivery()  # confirms are in order: the last one covers the rest
        channel.basic_publish(topology.DEAD, key, _body(ids[-1]),
                              _props(ids[-1], queue, key))  # fmt: skip
    finally:
        conn.close()
    wait_until(lambda: depth(env, topology.DEAD_QUEUE) == count, what=f"{count} dead letters")
    return ids


def _body(message_id: str) -> bytes:
    return b"unreadable " + message_id.encode()


def _props(message_id: str, queue: str, key: str) -> BasicProperties:
    headers = {"x-kpx-reason": "SCHEMA_INVALID: not a kpx envelope", "x-kpx-queue": queue,
               "x-kpx-routing-key": key}  # fmt: skip
    return BasicProperties(message_id=message_id, headers=headers, delivery_mode=2)


def table_reads(conn: Connection) -> dict[str, int]:
    """What PostgreSQL counted for dead_letters, this connection's work included: it forces
    the flush of its own pending statistics first (PostgreSQL 15), then reads them."""
    with transaction(conn) as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
    with transaction(conn) as cur:
        cur.execute(
            "SELECT seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_upd "
            "FROM pg_stat_user_tables WHERE relname = 'dead_letters'"
        )
        row = cur.fetchone()
    assert row is not None
    return dict(zip(("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "updated"),
                    map(int, row), strict=True))  # fmt: skip


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def stored(db: Connection) -> list[tuple[str, int, str]]:
    with transaction(db) as cur:
        cur.execute("SELECT message_id, times_dead, status FROM dead_letters ORDER BY message_id")
        return list(cur.fetchall())


def test_reinjecting_one_of_10000_stored_dead_letters_reads_only_its_row(
    env: Env, db: Connection
) -> None:
    ids = dead_letter_many(env, 10_000)
    assert deadmover.move_waiting(db, env.registry_url) == 10_000
    assert depth(env, topology.DEAD_QUEUE) == 0
    with transaction(db) as cur:
        assert deadstore.counts(cur) == {Status.PENDING: 10_000, Status.REINJECTED: 0}
    chosen = ids[7_777]
    user = topology.registry_user(env.vhost)
    before = table_reads(db)
    done = reinjection.reinject(db, env.registry_url, user, "ops", {chosen})
    reads = delta(table_reads(db), before)
    assert done.reinjected == (chosen,) and done.rows == 1
    # One index lookup for the row, one to mark it; no sequential scan, no other row read.
    assert reads["seq_scan"] == 0 and reads["seq_tup_read"] == 0, reads
    assert reads["idx_tup_fetch"] <= 2 and reads["updated"] == 1, reads
    # The broker: exactly that message back in kpx.registry, the dead-letter queue untouched.
    assert depth(env, topology.REGISTRY_QUEUE) == 1
    assert depth(env, topology.DEAD_QUEUE) == 0
    with transaction(db) as cur:
        [row] = deadstore.states(cur, [chosen])
        assert deadstore.counts(cur) == {Status.PENDING: 9_999, Status.REINJECTED: 1}
    assert (row.status, row.reinjected_by) == (Status.REINJECTED, "ops")

    before = table_reads(db)
    with transaction(db) as cur:
        page = deadstore.page(cur, deadstore.Filter(limit=100, after=5_000))
    reads = delta(table_reads(db), before)
    assert [p.message_id for p in page] == ids[5_000:5_100]  # ids 5,001.. are ids[5000:]
    assert reads["seq_scan"] == 0 and reads["idx_tup_fetch"] <= 100, reads


def test_a_retried_reinjection_publishes_nothing_and_says_what_happened(
    env: Env, db: Connection
) -> None:
    [chosen] = dead_letter_many(env, 1, topology.RECONCILER_QUEUE)
    deadmover.move_waiting(db, env.registry_url)
    user = topology.registry_user(env.vhost)
    first = reinjection.reinject(db, env.registry_url, user, "ops", {chosen})
    again = reinjection.reinject(db, env.registry_url, user, "ana", {chosen, "no-such-id"})
    assert first.reinjected == (chosen,)
    assert again.reinjected == () and again.unknown == ("no-such-id",)
    [already] = again.already
    assert (already.message_id, already.reinjected_by) == (chosen, "ops")
    assert depth(env, topology.RECONCILER_QUEUE) == 1  # published once, back where it failed
    everything = reinjection.reinject(db, env.registry_url, user, "ana", None)
    assert everything.rows == 0 and depth(env, topology.RECONCILER_QUEUE) == 1


# The mover, killed after its batch committed and before the ack: a real crash of a real
# process (os._exit), at the one moment where a message is both stored and still queued.
CRASH = textwrap.dedent("""
    import os, sys
    from exchange.adapters.postgres import connect
    from exchange.registry import deadmover

    def crash(channel, delivery_tag):
        os._exit(17)

    deadmover._ack = crash
    deadmover.move_waiting(connect(sys.argv[1]), sys.argv[2])
""")


def test_a_crash_between_moving_and_acking_neither_loses_nor_doubles_a_dead_letter(
    env: Env, db: Connection
) -> None:
    count = deadmover.BATCH * 2 + 100
    ids = dead_letter_many(env, count)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, env.dsn, env.registry_url], capture_output=True, timeout=60
    )
    assert crashed.returncode == 17, crashed.stderr.decode()
    assert len(stored(db)) == deadmover.BATCH  # the first batch committed...
    wait_until(lambda: depth(env, topology.DEAD_QUEUE) == count,
               what="every message back in the queue")  # ...and was never acked  # fmt: skip
    assert deadmover.move_waiting(db, env.registry_url) == count
    assert depth(env, topology.DEAD_QUEUE) == 0
    assert stored(db) == [(m, 1, "pending") for m in sorted(ids)]  # each once, dead once


def test_the_registry_service_moves_dead_letters_into_the_store(env: Env, db: Connection) -> None:
    ids = dead_letter_many(env, 30)
    running = env.run_registry(relay=False)
    try:
        wait_until(lambda: len(stored(db)) == 30, what="30 dead letters stored")
        wait_until(lambda: depth(env, topology.DEAD_QUEUE) == 0, what="the queue emptied")
        wait_until(lambda: _pending_gauge(topology.REGISTRY_QUEUE) == 30, timeout=40,
                   what="the service's pending gauge at 30")  # fmt: skip
    finally:
        running.stop()
    assert [m for m, _, _ in stored(db)] == sorted(ids)


# The re-injection, killed after the broker confirmed the publish and before the row was
# marked: the row must still say pending (not lost), and the retry must mark it.
CRASH_REINJECTING = textwrap.dedent("""
    import os, sys
    from exchange.adapters.postgres import connect
    from exchange.registry import deadstore, reinjection

    def crash(cur, ids, by):
        os._exit(17)

    deadstore.mark_reinjected = crash
    reinjection.reinject(connect(sys.argv[1]), sys.argv[2], sys.argv[3], "ops", {sys.argv[4]})
""")


def test_a_crash_between_publishing_and_marking_leaves_the_row_pending_for_the_retry(
    env: Env, db: Connection
) -> None:
    [chosen] = dead_letter_many(env, 1, topology.node_queue("ZA"), "ZA.RegistryDecision")
    deadmover.move_waiting(db, env.registry_url)
    user = topology.registry_user(env.vhost)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_REINJECTING, env.dsn, env.registry_url, user, chosen],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert crashed.returncode == 17, crashed.stderr.decode()
    assert depth(env, topology.node_queue("ZA")) == 1  # published and confirmed...
    assert stored(db) == [(chosen, 1, "pending")]  # ...but not marked: the retry does it
    retried = reinjection.reinject(db, env.registry_url, user, "ops", {chosen})
    assert retried.reinjected == (chosen,)
    assert stored(db) == [(chosen, 1, "reinjected")]
    # At least once: the node has it twice, and drops the second by its event id.
    assert depth(env, topology.node_queue("ZA")) == 2


def test_a_dead_letter_the_broker_cannot_route_back_stays_pending(env: Env, db: Connection) -> None:
    # A node's inbox dead letter whose key names no node: kpx.notify routes it nowhere.
    [chosen] = dead_letter_many(env, 1, topology.node_queue("ZA"), "QQ.RegistryDecision")
    deadmover.move_waiting(db, env.registry_url)
    user = topology.registry_user(env.vhost)
    done = reinjection.reinject(db, env.registry_url, user, "ops", None)
    assert done.unconfirmed == (chosen,) and done.rows == 0
    assert stored(db) == [(chosen, 1, "pending")]


def _pending_gauge(queue: str) -> float | None:
    return REGISTRY.get_sample_value("kpx_dead_letters_pending", {"queue": queue})


def test_the_pending_gauge_counts_the_store_per_queue_and_falls_to_zero_after_reinjection(
    env: Env, db: Connection
) -> None:
    # Stored, dead letters are no longer a queue depth: the gauge is what the alert reads.
    dead_letter_many(env, 3, topology.RECONCILER_QUEUE)
    deadmover.move_waiting(db, env.registry_url)
    now = [0.0]
    gauge = deadmover.PendingGauge(every=15, clock=lambda: now[0])
    gauge(db)
    assert _pending_gauge(topology.RECONCILER_QUEUE) == 3
    user = topology.registry_user(env.vhost)
    assert reinjection.reinject(db, env.registry_url, user, "ops", None).rows == 3
    now[0] = 14.9
    gauge(db)  # not due: not counted again
    assert _pending_gauge(topology.RECONCILER_QUEUE) == 3
    now[0] = 15.0
    gauge(db)
    assert _pending_gauge(topology.RECONCILER_QUEUE) == 0  # kept at 0, not dropped
