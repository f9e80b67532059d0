"""Signatures verified ahead in a helper process (exchange/registry/preverify.py).

The helper's answers only ever spare the opener a verification it would have made: a
forged signature, a key the helper did not use, or a helper that died all end in the
opener's own verification, with the same outcome as without a helper.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pika.spec import BasicProperties
from support.registry import (
    STRANGER,
    Env,
    certificate,
    decided_count,
    issuance,
    make_env,
    wait_until,
)

from exchange.adapters.rabbitmq import Delivery
from exchange.registry.opening import KeySource, Opened, Opener
from exchange.registry.preverify import AheadVerifier, verify_all
from exchange.wire import topology
from exchange.wire.codec import default_store
from exchange.wire.envelope import seal, signed_parts
from exchange.wire.signing import Keyring, Signer, generate_key

VHOST = "kpx-preverify"
SIGNERS = {code: generate_key(code) for code in ("BW", "ZA")}


def _body(signer: Signer, serial: int) -> bytes:
    record = issuance(certificate(signer.producer, serial)).to_record()
    return seal(default_store(), signer, "CertificateIssued", record, serial)[1]


def _forged(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 1])  # the last signature byte flipped


def _keys() -> dict[str, bytes]:
    return {s.key_id: s.verify_key.public_key for s in SIGNERS.values()}


def _triple(body: bytes, public: bytes) -> tuple[bytes, bytes, bytes]:
    parts = signed_parts(body)
    assert parts is not None
    return public, parts[0], parts[1]


def _bodies(n: int) -> list[bytes]:
    return [_body(SIGNERS["BW" if i % 2 else "ZA"], 1000 + i) for i in range(n)]


@pytest.fixture
def ahead() -> Iterator[AheadVerifier]:
    verifier = AheadVerifier(min_batch=8, chunk=8)
    yield verifier
    verifier.close(wait=True)


def _settled(ahead: AheadVerifier, triple: tuple[bytes, bytes, bytes]) -> bool:
    """Ask until the helper answered (it starts in a second or so), or 30 s passed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ahead.verified(*triple):
            return True
        time.sleep(0.02)
    return False


def test_the_helper_finds_the_key_of_each_envelope_and_refuses_a_forgery() -> None:
    good = _body(SIGNERS["BW"], 1)
    publics = verify_all([good, _forged(good), b"not an envelope", good], _keys())
    bw = SIGNERS["BW"].verify_key.public_key
    assert publics == [bw, None, None, bw]
    assert verify_all([good], {}) == [None]  # a key id it was not given


def test_only_the_exact_bytes_the_helper_verified_are_answered(ahead: AheadVerifier) -> None:
    bodies = _bodies(20)
    forged = _forged(bodies[5])
    ahead.start([*bodies, forged], _keys())
    bw, za = SIGNERS["BW"].verify_key.public_key, SIGNERS["ZA"].verify_key.public_key
    last = bodies[-1]
    assert _settled(ahead, _triple(last, bw))
    assert ahead.verified(*_triple(bodies[0], za))
    assert not ahead.verified(*_triple(bodies[0], bw))  # not the key the helper verified with
    assert not ahead.verified(*_triple(forged, za))
    ahead.start(bodies[:2], _keys())  # a small batch: nothing is sent, the last one forgotten
    assert not ahead.verified(*_triple(last, bw))


def test_a_dead_helper_is_replaced_and_meanwhile_nothing_is_answered(
    ahead: AheadVerifier,
) -> None:
    bodies = _bodies(16)
    ahead.start(bodies, _keys())
    bw = SIGNERS["BW"].verify_key.public_key
    assert _settled(ahead, _triple(bodies[1], bw))
    helper = ahead._helper
    assert helper is not None
    os.kill(helper.pid, signal.SIGKILL)
    helper.join(timeout=10)
    ahead.start(bodies, _keys())  # notices the death, starts another helper
    assert ahead._helper is not helper
    assert _settled(ahead, _triple(bodies[3], bw))
    ahead.close(wait=True)
    assert not helper.is_alive() and ahead._helper is None


def _deliveries(bodies: list[bytes], users: list[str]) -> list[Delivery]:
    return [
        Delivery(tag, "x.CertificateIssued", BasicProperties(user_id=user), body, False)
        for tag, (body, user) in enumerate(zip(bodies, users, strict=True), 1)
    ]


def _outcome(o: Opened) -> tuple[object, ...]:
    refusal = None if o.refusal is None else (o.refusal.code, o.refusal.sentence)
    return (o.key, o.producer, o.authentic, o.sequence, refusal, o.event is not None)


def test_the_opener_decides_the_same_with_and_without_the_helper(ahead: AheadVerifier) -> None:
    bodies = _bodies(30)
    bodies[4] = _forged(bodies[4])
    bodies[9] = b"\xc3\x01garbage"
    bodies[12] = _body(generate_key("BW"), 77)  # a key the registry does not know
    users = [topology.node_user("BW" if i % 2 else "ZA", VHOST) for i in range(len(bodies))]
    users[7] = topology.node_user("ZA", VHOST)  # published by another node than signed it
    deliveries = _deliveries(bodies, users)
    node_users = {topology.node_user(c, VHOST): c for c in SIGNERS}

    def opener(helper: AheadVerifier | None) -> Opener:
        keys = KeySource(lambda: Keyring([s.verify_key for s in SIGNERS.values()]))
        return Opener(default_store(), keys, node_users, set(SIGNERS), "kpx-registry", helper)

    plain = [_outcome(opener(None).open(d)) for d in deliveries]
    helped = opener(ahead)
    helped.look_ahead(deliveries)
    bw = SIGNERS["BW"].verify_key.public_key
    assert _settled(ahead, _triple(bodies[-1], bw))  # every chunk answered before opening
    assert [_outcome(helped.open(d)) for d in deliveries] == plain
    assert ahead.helped >= 25
    refusals = {o[4][0] for o in plain if o[4] is not None}
    assert refusals >= {"BAD_SIGNATURE", "SCHEMA_INVALID"}


_ORPHAN = """
import os, sys, time
from exchange.registry.preverify import AheadVerifier
if __name__ == "__main__":
    ahead = AheadVerifier(min_batch=1)
    ahead.start([b"no envelope"] * 4, {})
    time.sleep(1)
    print(ahead._helper.pid, flush=True)
    os.kill(os.getpid(), 9)
"""


def test_the_helper_does_not_outlive_a_consumer_killed_with_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "consumer.py"
    script.write_text(_ORPHAN)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), "the helper outlived its consumer"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _decide(env: Env, ahead: bool) -> list[tuple[str, str | None]]:
    """80 events queued while the registry is stopped (one batch, over min_batch): good
    certificates of BW and ZA, a forgery, wrong totals; (decision, reason) in order."""
    serials = iter(range(40_000, 40_100))
    certs = [
        certificate("BW" if i % 2 else "ZA", next(serials), destination="NA") for i in range(78)
    ]
    sent = [env.producers.seal(c.issuing_member or "", issuance(c)) for c in certs]
    stranger = env.producers.signers[STRANGER]  # a key the registry does not hold
    sent.insert(10, env.producers.seal("BW", issuance(certificate("BW", 40_500)), signer=stranger))
    wrong = certificate("ZA", 40_501, destination="NA", total_carats=Decimal("999.00"))
    sent.insert(40, env.producers.seal("ZA", issuance(wrong)))
    for s in sent:
        env.publisher.send(s)
    running = env.run_registry(verify_ahead=ahead)
    try:
        wait_until(lambda: decided_count(env) == len(sent), what="the batch decided")
    finally:
        running.stop()
    rows = env.query("SELECT claimed_event_id::text AS id, decision, reason FROM event_log")
    by_id = {r["id"]: (r["decision"], r["reason"]) for r in rows}
    return [by_id[s.event_id] for s in sent]


def test_the_running_registry_decides_the_same_with_its_helper(
    make_vhost: Any, make_database: Any
) -> None:
    """The service with ``verify_ahead`` starts and stops its helper and decides the same;
    which signatures the helper answers in time varies (it starts with this batch), so the
    opener's use of its answers is tested on its own above."""
    outcomes = []
    for ahead in (False, True):
        vhost, database = make_vhost(), make_database()
        env = make_env(vhost.name, vhost.amqp_url, database.url)
        try:
            outcomes.append(_decide(env, ahead))
        finally:
            env.publisher.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][10] == ("REJECTED", "BAD_SIGNATURE")
    assert outcomes[1][40][0] == "REJECTED"
    assert [o for i, o in enumerate(outcomes[1]) if i not in (10, 40)] == [("ACCEPTED", None)] * 78
