"""KeyRotated at the registry (DESIGN §15): a running registry learns a member's next key.

Every event is validly signed and published by its producer's own broker user; the registry
runs in a thread (tests/support/registry.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.registry import Env, Sealed, certificate, issuance, running_env

from exchange.adapters.postgres import connect
from exchange.domain.events import Outcome
from exchange.domain.keyevents import KeyRotation, check_rotation
from exchange.errors import KeyNotYetKnown, UnknownKey
from exchange.registry import keys
from exchange.wire.envelope import seal
from exchange.wire.keyring import RefreshingKeyring
from exchange.wire.signing import Keyring, Signer, generate_key

_serial = iter(range(960_000, 990_000))


@pytest.fixture(scope="module")
def env(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running_env(make_session_vhost, make_session_database)


def send(env: Env, producer: str, signer: Signer, payload: Any) -> Any:
    producers = env.producers
    sequence = producers.sequences.get(producer, 0) + 1
    producers.sequences[producer] = sequence
    event_type = type(payload).EVENT_TYPE
    event_id, body = seal(producers.store, signer, event_type, payload.to_record(), sequence)
    env.publisher.send(Sealed(event_id, event_type, producer, sequence, body))
    return env.decision_for(producer, event_id)


def announce(current: Signer, new: Signer, **changes: Any) -> KeyRotation:
    rotation = KeyRotation(
        current.producer, new.key_id, new.verify_key.public_key, current.key_id, new.created_at
    )
    return dataclasses.replace(rotation, **changes)


def test_a_running_registry_learns_the_next_key_from_the_announcement(env: Env) -> None:
    current, new = env.producers.signers["NA"], generate_key("NA")
    decided = send(env, "NA", current, announce(current, new))
    assert decided.decision is Outcome.ACCEPTED, decided.detail
    row = env.query("SELECT producer, announced_with FROM authority_keys WHERE key_id = %s",
                    (new.key_id,))  # fmt: skip
    assert row == [{"producer": "NA", "announced_with": current.key_id}]
    signed_new = send(env, "NA", new, issuance(certificate("NA", next(_serial))))
    assert signed_new.decision is Outcome.ACCEPTED, signed_new.detail
    signed_old = send(env, "NA", current, issuance(certificate("NA", next(_serial))))
    assert signed_old.decision is Outcome.ACCEPTED  # the old key keeps verifying


@pytest.mark.parametrize(
    "change, reason",
    [
        ("foreign id", "SCHEMA_INVALID"),
        ("wrong fingerprint", "SCHEMA_INVALID"),
        ("not the signing key", "BAD_SIGNATURE"),
        ("someone else's", "ISSUER_MISMATCH"),
    ],
)
def test_a_bad_announcement_is_refused_and_registers_nothing(
    env: Env, change: str, reason: str
) -> None:
    current, new = env.producers.signers["BW"], generate_key("BW")
    other = generate_key("ZA")
    rotation = {
        "foreign id": announce(current, new, key_id=other.key_id),
        "wrong fingerprint": announce(current, new, public_key=other.verify_key.public_key),
        "not the signing key": announce(current, new, previous_key_id="BW-20260101-00000000"),
        "someone else's": announce(current, new, participant="ZA"),
    }[change]
    decided = send(env, "BW", current, rotation)
    assert (decided.decision, decided.reason) == (Outcome.REJECTED, reason), decided.detail
    assert env.query("SELECT 1 FROM authority_keys WHERE key_id = ANY(%s)",
                     ([new.key_id, other.key_id],)) == []  # fmt: skip


def test_revoking_a_key_revokes_the_keys_it_announced_from_that_day(env: Env) -> None:
    current, thiefs = env.producers.signers["ZA"], generate_key("ZA")
    assert send(env, "ZA", current, announce(current, thiefs)).decision is Outcome.ACCEPTED
    conn = connect(env.dsn)
    try:
        revoked = keys.revoke(
            conn, env.producers.store, env.registry_signer, env.region, member="ZA",
            key_id=current.key_id, revoked_from=datetime.now(UTC).date(), reason="stolen",
        )  # fmt: skip
    finally:
        conn.close()
    assert set(revoked) == {current.key_id, thiefs.key_id}


def test_the_rotation_rule_checks_who_which_key_and_that_it_is_one() -> None:
    current, new = generate_key("BW"), generate_key("BW")
    nodes = {"BW", "ZA"}
    assert check_rotation(announce(current, new), "BW", node_codes=nodes) is None
    same = announce(current, current)
    refusal = check_rotation(same, "BW", node_codes=nodes)
    assert refusal is not None and refusal.code == "NOT_ALLOWED"
    short = announce(current, new, public_key=b"x" * 31)
    refusal = check_rotation(short, "BW", node_codes=nodes)
    assert refusal is not None and refusal.code == "SCHEMA_INVALID"


def test_an_unknown_key_is_looked_up_before_the_verifier_gives_up() -> None:
    signer = generate_key("BW")
    table: list[Any] = []
    clock = [0.0]
    ring = RefreshingKeyring(
        lambda: Keyring(list(table)), transient_unknown=True, clock=lambda: clock[0]
    )
    message, signature = b"m", signer.sign(b"m")
    with pytest.raises(KeyNotYetKnown):  # transient: the batch is retried, never dead-lettered
        ring.verify(signer.key_id, "BW", message, signature)
    table.append(signer.verify_key)  # the registry committed the announced key meanwhile
    clock[0] = 2.0  # the consumer's retry, after its backoff
    ring.verify(signer.key_id, "BW", message, signature)
    assert ring.refreshes == 2


def test_made_up_key_ids_are_looked_up_once_per_interval() -> None:
    clock = [0.0]
    ring = RefreshingKeyring(Keyring, min_interval=5.0, clock=lambda: clock[0])
    for _ in range(100):
        with pytest.raises(UnknownKey):
            ring.verify("BW-20260101-00000000", "BW", b"m", b"s" * 64)
    assert ring.refreshes == 1
    clock[0] = 6.0
    with pytest.raises(UnknownKey):
        ring.verify("BW-20260101-00000000", "BW", b"m", b"s" * 64)
    assert ring.refreshes == 2
