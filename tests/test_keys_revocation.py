"""Revocation (DESIGN §15): a key lifted from a node's folder signs nothing after its date.

The registry runs in a thread on a private vhost and database (tests/support/registry.py);
BW's key is written to a node folder as ``kpx node init`` would, and the "thief" loads it from
there. Events it signed before the revocation stay accepted and their certificates valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.registry import (
    Env,
    Sealed,
    certificate,
    issuance,
    make_env,
    wait_until,
)

from exchange.adapters.postgres import connect
from exchange.domain.events import Outcome
from exchange.domain.keyevents import KeyRevocation
from exchange.errors import BadSignature
from exchange.registry import keys, queries
from exchange.wire.envelope import seal
from exchange.wire.keyring import RefreshingKeyring
from exchange.wire.signing import Keyring, Signer, generate_key, load_signer, save_key

_serial = iter(range(900_000, 950_000))


@pytest.fixture
def env(make_vhost: Any, make_database: Any) -> Iterator[Env]:
    vhost, database = make_vhost(), make_database()
    yield make_env(vhost.name, vhost.amqp_url, database.url)


def send(env: Env, signer: Signer, payload: Any, produced_at: datetime | None = None) -> Any:
    producers = env.producers
    sequence = producers.sequences.get("BW", 0) + 1
    producers.sequences["BW"] = sequence
    event_id, body = seal(
        producers.store, signer, "CertificateIssued", payload.to_record(), sequence,
        produced_at=produced_at,
    )  # fmt: skip
    env.publisher.send(Sealed(event_id, "CertificateIssued", "BW", sequence, body))
    return env.decision_for("BW", event_id)


def revoke(env: Env, key_id: str, day: date) -> list[str]:
    conn = connect(env.dsn)
    try:
        return keys.revoke(
            conn, env.producers.store, env.registry_signer, env.region,
            member="BW", key_id=key_id, revoked_from=day, reason="laptop stolen",
        )  # fmt: skip
    finally:
        conn.close()


def test_a_key_lifted_from_a_nodes_folder_is_refused_after_its_revocation(
    env: Env, tmp_path: Path
) -> None:
    private, _ = save_key(env.producers.signers["BW"], tmp_path / "nodes" / "BW" / "keys")
    stolen = load_signer(private)
    before = certificate("BW", next(_serial))
    running = env.run_registry()
    try:
        assert send(env, stolen, issuance(before)).decision is Outcome.ACCEPTED
    finally:
        running.stop()
    today = datetime.now(UTC).date()
    assert revoke(env, stolen.key_id, today) == [stolen.key_id]
    running = env.run_registry()
    try:
        now = send(env, stolen, issuance(certificate("BW", next(_serial))))
        assert (now.decision, now.reason) == (Outcome.REJECTED, "BAD_SIGNATURE")
        backdated = datetime.now(UTC) - timedelta(days=3)  # a thief writes any date
        late = send(env, stolen, issuance(certificate("BW", next(_serial))), backdated)
        assert (late.decision, late.reason) == (Outcome.REJECTED, "BAD_SIGNATURE")
        wait_until(
            lambda: any(
                kind == "KeyRevoked" and isinstance(p, KeyRevocation) and p.key_id == stolen.key_id
                for kind, p in env.messages("BW")
            ),
            what="the KeyRevoked notice to BW",
        )
    finally:
        running.stop()
    conn = connect(env.dsn)
    try:  # history signed before the revocation keeps verifying
        ok, sentence = queries.verify(conn, before.certificate_id, "XS", date(2026, 3, 5))
    finally:
        conn.close()
    assert ok, sentence


def test_a_new_key_registered_after_a_revocation_signs_again(env: Env) -> None:
    old = env.producers.signers["BW"]
    revoke(env, old.key_id, datetime.now(UTC).date())
    new = generate_key("BW")
    conn = connect(env.dsn)
    try:
        keys.register_member_key(conn, env.region, "BW", new.verify_key)
    finally:
        conn.close()
    running = env.run_registry()
    try:
        assert send(env, new, issuance(certificate("BW", next(_serial)))).decision is (
            Outcome.ACCEPTED
        )
    finally:
        running.stop()


def test_a_running_verifier_learns_a_revocation_within_its_refresh_age() -> None:
    signer = generate_key("BW")
    revoked_from: list[date | None] = [None]
    clock = [0.0]

    def load() -> Keyring:
        key = signer.verify_key
        return Keyring([type(key)(key.key_id, "BW", key.public_key, key.created_at,
                                  revoked_from=revoked_from[0])])  # fmt: skip

    ring = RefreshingKeyring(load, max_age=1.0, clock=lambda: clock[0])
    now = datetime.now(UTC)
    ring.check_in_force(signer.key_id, now, 1)
    revoked_from[0] = now.date()
    clock[0] = 1.5
    ring.verify(signer.key_id, "BW", b"m", signer.sign(b"m"))  # refreshes: older than max_age
    with pytest.raises(BadSignature, match="revoked"):
        ring.check_in_force(signer.key_id, now, 1)
    ring.check_in_force(signer.key_id, now - timedelta(days=1), 1)  # earlier: still valid
