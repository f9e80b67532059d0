"""Issue 11, item 6: held voids are bounded per producer and read only when they can be decided.

A void of a certificate the registry does not know is held while its producer has a gap
below it. Before: every batch of that producer re-read and re-decoded all of them (1,150
held 0.9 MB voids: 10.6 s a batch, then MemoryError), without any bound. Now: past
``[policy] max_held_events`` (or ``max_held_bytes``) the void is rejected with a reason, and
the held ones are read only by a batch that fills one of the producer's gaps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from support.registry import Env, certificate, issuance, make_env, voiding, wait_until

from exchange.adapters.postgres import connect, transaction
from exchange.domain.events import Outcome
from exchange.registry.opening import Opener

MAX_HELD = 3


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Iterator[Env]:
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    policy = dataclasses.replace(env.region.policy, max_held_events=MAX_HELD)
    env.region = dataclasses.replace(env.region, policy=policy)
    yield env
    env.publisher.close()


def test_held_voids_are_bounded_and_read_only_when_a_gap_closes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    reopened: list[bytes] = []
    real = Opener.reopen

    def counting(self: Opener, body: bytes) -> Any:
        reopened.append(body)
        return real(self, body)

    monkeypatch.setattr(Opener, "reopen", counting)
    running = env.run_registry()
    try:
        p = env.producers
        first = p.seal("BW", issuance(certificate("BW", 1)))
        env.publisher.send(first)
        assert env.decision_for("BW", first.event_id).decision is Outcome.ACCEPTED
        missing = p.seal("BW", issuance(certificate("BW", 2)))  # held back: the gap
        voids = [p.seal("BW", voiding(certificate("BW", 100 + n))) for n in range(MAX_HELD + 2)]
        for v in voids:
            env.publisher.send(v)
        told = [env.decision_for("BW", v.event_id) for v in voids[MAX_HELD:]]
        assert [d.reason for d in told] == ["UNKNOWN_CERTIFICATE"] * 2
        assert all("waiting for its missing events" in d.detail for d in told)
        held = env.query("SELECT count(*) AS n FROM event_log WHERE decision = 'HELD'")
        assert held == [{"n": MAX_HELD}]
        later = p.seal("BW", issuance(certificate("BW", 3)))  # fills no gap
        env.publisher.send(later)
        assert env.decision_for("BW", later.event_id).decision is Outcome.ACCEPTED
        assert reopened == [], "held voids were read by a batch that could not decide them"
        env.publisher.send(missing)
        assert env.decision_for("BW", missing.event_id).decision is Outcome.ACCEPTED
        released = [env.decision_for("BW", v.event_id) for v in voids[:MAX_HELD]]
        assert [d.reason for d in released] == ["UNKNOWN_CERTIFICATE"] * MAX_HELD
        assert len(reopened) == MAX_HELD
        wait_until(
            lambda: (
                env.query("SELECT count(*) AS n FROM event_log WHERE decision = 'HELD'")
                == [{"n": 0}]
            ),
            what="no void held",
        )
    finally:
        running.stop()


def test_held_voids_are_bounded_by_bytes_too(make_vhost: Any, make_database: Any) -> None:
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    p = env.producers
    first = p.seal("BW", issuance(certificate("BW", 1)))
    p.seal("BW", issuance(certificate("BW", 2)))  # never sent: the gap
    voids = [p.seal("BW", voiding(certificate("BW", 100 + n))) for n in range(3)]
    size = len(voids[0].body)
    policy = dataclasses.replace(env.region.policy, max_held_bytes=2 * size + size // 2)
    env.region = dataclasses.replace(env.region, policy=policy)
    running = env.run_registry()
    try:
        env.publisher.send(first)
        assert env.decision_for("BW", first.event_id).decision is Outcome.ACCEPTED
        for v in voids:
            env.publisher.send(v)
        told = env.decision_for("BW", voids[2].event_id)
        assert told.reason == "UNKNOWN_CERTIFICATE" and "bytes" in told.detail
        held = env.query("SELECT count(*) AS n FROM event_log WHERE decision = 'HELD'")
        assert held == [{"n": 2}]
    finally:
        running.stop()
        env.publisher.close()


def test_a_jump_is_stored_as_one_gap_range_that_late_numbers_split(
    make_vhost: Any, make_database: Any
) -> None:
    """Item 7: a jump of 9,999 wrote 9,999 gap rows (10**6: 1,000,059); now one range row,
    split by the numbers that arrive late; a void above the range is held until it closes."""
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    p = env.producers
    first = p.seal("BW", issuance(certificate("BW", 1)))  # sequence 1
    late = {n: p.seal("BW", issuance(certificate("BW", n)), sequence=n) for n in (2, 5000, 10000)}
    top = p.seal("BW", voiding(certificate("BW", 9999)), sequence=10001)  # not yet known
    ranges = "SELECT first_sequence AS a, last_sequence AS b FROM sequence_gap_ranges ORDER BY 1"
    running = env.run_registry()
    try:
        env.publisher.send(first)
        env.publisher.send(top)
        wait_until(lambda: env.query(ranges) == [{"a": 2, "b": 10000}], what="one range")
        held = env.query("SELECT decision FROM event_log WHERE event_id = %s", (top.event_id,))
        assert held == [{"decision": "HELD"}]
        env.publisher.send(late[5000])
        assert env.decision_for("BW", late[5000].event_id).decision is Outcome.ACCEPTED
        assert env.query(ranges) == [{"a": 2, "b": 4999}, {"a": 5001, "b": 10000}]
        for n in (2, 10000):
            env.publisher.send(late[n])
            assert env.decision_for("BW", late[n].event_id).decision is Outcome.ACCEPTED
        assert env.query(ranges) == [{"a": 3, "b": 4999}, {"a": 5001, "b": 9999}]
        fills = env.query("SELECT sequence FROM sequence_gap_fills ORDER BY 1")
        assert fills == [{"sequence": 2}, {"sequence": 5000}, {"sequence": 10000}]
        count = env.query("SELECT count(*) AS n FROM sequence_gaps WHERE filled_at IS NULL")
        assert count == [{"n": 4997 + 4999}]  # the by-hand view expands the ranges
        held = env.query("SELECT decision FROM event_log WHERE event_id = %s", (top.event_id,))
        assert held == [{"decision": "HELD"}], "gaps remain below the void"
    finally:
        running.stop()
        env.publisher.close()


def test_the_migration_turns_per_number_gap_rows_into_ranges(make_database: Any) -> None:
    """Item 7: what 001-006 stored (one row per number) is kept as ranges and fills."""
    conn = connect(make_database().url)
    try:
        sql = resources.files("exchange.registry").joinpath("sql")
        with transaction(conn) as cur:
            for name in sorted(f.name for f in sql.iterdir() if f.name.endswith(".sql")):
                if name.startswith("007"):
                    cur.execute(
                        "INSERT INTO sequence_gaps (producer, sequence, filled_at) SELECT 'BW', s,"
                        " CASE WHEN s = 5 THEN now() END FROM generate_series(2, 9) s"
                    )
                cur.execute(sql.joinpath(name).read_text(encoding="utf-8"))
            cur.execute("SELECT producer, first_sequence, last_sequence FROM sequence_gap_ranges"
                        " ORDER BY 2")  # fmt: skip
            assert cur.fetchall() == [("BW", 2, 4), ("BW", 6, 9)]
            cur.execute("SELECT producer, sequence FROM sequence_gap_fills")
            assert cur.fetchall() == [("BW", 5)]
    finally:
        conn.close()
