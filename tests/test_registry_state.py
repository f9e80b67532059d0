"""Redelivery, reordering and scale-out leave the state one ordered delivery leaves.

The same 5,000 signed events (certificates, voids, import confirmations from three members)
are delivered (a) once, in order, to one registry; (b) twice each, shuffled, to one registry;
(c) twice each, shuffled, to two registries consuming the same queue. The three registry
databases must hold exactly the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from support.registry import (
    Env,
    Producers,
    Sealed,
    certificate,
    confirmation,
    issuance,
    make_env,
    make_signers,
    snapshot,
    voiding,
    wait_until,
)

from exchange.wire.codec import default_store

N_EVENTS = 5_000
MEMBERS = ("BW", "ZA", "NA")


def generate(n: int, seed: int = 7) -> list[Sealed]:
    """``n`` events in an order a real region could produce them."""
    rng = random.Random(seed)
    keys = make_signers()
    producers = Producers(default_store(), keys[0])
    events: list[Sealed] = []
    issued: list[Any] = []
    serial = {m: 0 for m in MEMBERS}
    while len(events) < n:
        roll = rng.random()
        if roll < 0.6 or len(issued) < 10:
            member = rng.choice(MEMBERS)
            serial[member] += 1
            dest = rng.choice([m for m in MEMBERS if m != member])
            cert = certificate(member, serial[member], destination=dest)
            issued.append(cert)
            events.append(producers.seal(member, issuance(cert)))
            continue
        cert = issued.pop(rng.randrange(len(issued)))  # each certificate used once more at most
        if roll < 0.72:
            events.append(producers.seal(cert.issuing_member, voiding(cert)))
        else:
            events.append(producers.seal(cert.destination, confirmation(cert, cert.destination)))
    generate.keys = keys  # type: ignore[attr-defined]
    return events


@pytest.fixture(scope="module")
def workload() -> tuple[list[Sealed], Any]:
    events = generate(N_EVENTS)
    return events, generate.keys  # type: ignore[attr-defined]


@pytest.fixture
def fresh_env(
    make_vhost: Any, make_database: Any, workload: tuple[list[Sealed], Any]
) -> Iterator[Env]:
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url, keys=workload[1])
    yield env
    env.publisher.close()


def deliver(env: Env, events: list[Sealed], registries: int) -> dict[str, Any]:
    # The answers are tested elsewhere; without the relay the state comparison runs faster.
    running = [env.run_registry(relay=False) for _ in range(registries)]
    for sealed in events:
        env.publisher.send(sealed, confirm=False)
    expected = len({s.event_id for s in events})

    def done() -> bool:
        rows = env.query(
            "SELECT count(*) AS n, count(*) FILTER (WHERE decision = 'HELD') AS held FROM event_log"
        )[0]
        return bool(rows["n"] == expected and rows["held"] == 0)

    wait_until(done, timeout=120, what=f"{expected} events decided")
    queue_empty(env)
    for r in running:
        r.stop()
    return snapshot(env)


def queue_empty(env: Env) -> None:
    from exchange.adapters.management import Admin

    admin = Admin(env.admin_url)
    try:

        def empty() -> bool:
            queues = {q["name"]: q for q in admin.queues(env.vhost)}
            q = queues["kpx.registry"]
            return bool(q.get("messages", 1) == 0)

        wait_until(empty, timeout=60, what="kpx.registry drained")
    finally:
        admin.close()


@pytest.fixture(scope="module")
def ordered_state(
    make_session_vhost: Any, make_session_database: Any, workload: tuple[list[Sealed], Any]
) -> dict[str, Any]:
    vhost, database = make_session_vhost(), make_session_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url, keys=workload[1])
    try:
        return deliver(env, workload[0], registries=1)
    finally:
        env.publisher.close()


def shuffled_twice(events: list[Sealed], seed: int) -> list[Sealed]:
    doubled = events + events
    random.Random(seed).shuffle(doubled)
    return doubled


def test_one_ordered_delivery_accepts_everything(ordered_state: dict[str, Any]) -> None:
    decisions = {e["decision"] for e in ordered_state["events"]}
    assert decisions == {"ACCEPTED"}
    assert len(ordered_state["events"]) == N_EVENTS
    assert ordered_state["open_gaps"] == []
    states = {c["state"] for c in ordered_state["certificates"]}
    assert states == {"ISSUED", "VOIDED", "IMPORT_CONFIRMED"}


def test_every_event_twice_and_shuffled_leaves_the_ordered_state(
    fresh_env: Env, workload: tuple[list[Sealed], Any], ordered_state: dict[str, Any]
) -> None:
    state = deliver(fresh_env, shuffled_twice(workload[0], seed=11), registries=1)
    assert state == ordered_state


def test_two_registries_on_one_queue_leave_the_ordered_state(
    fresh_env: Env, workload: tuple[list[Sealed], Any], ordered_state: dict[str, Any]
) -> None:
    state = deliver(fresh_env, shuffled_twice(workload[0], seed=12), registries=2)
    assert state == ordered_state
