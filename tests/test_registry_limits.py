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
from typing import Any

import pytest
from support.registry import Env, certificate, issuance, make_env, voiding, wait_until

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
