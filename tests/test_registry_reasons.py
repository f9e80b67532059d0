"""Every DESIGN §7 reason code, produced by an event sent through the real broker.

One registry runs for the module; each test sends its offending event AS a node's broker user
and reads the RegistryDecision from that node's queue kpx.node.<CODE>.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from support.registry import (
    STRANGER,
    Env,
    certificate,
    confirmation,
    issuance,
    running_env,
    voiding,
    wait_until,
)

from exchange.domain.certificate import HsCode
from exchange.domain.events import Issuance, Outcome
from exchange.wire.codec import HEADER_SIZE, MAGIC
from exchange.wire.envelope import seal
from exchange.wire.signing import generate_key


@pytest.fixture(scope="module")
def env(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running_env(make_session_vhost, make_session_database)


_serial = iter(range(1, 1_000_000))


def fresh(member: str = "BW", **changes: Any) -> Any:
    return certificate(member, next(_serial), **changes)


def rejected_with(env: Env, node: str, event_id: str, reason: str) -> str:
    decision = env.decision_for(node, event_id)
    assert decision.decision is Outcome.REJECTED, decision
    assert decision.reason == reason, decision
    rows = env.query(
        "SELECT reason FROM event_log WHERE claimed_event_id = %s AND decision = 'REJECTED'",
        (event_id,),
    )
    assert rows and rows[0]["reason"] == reason
    return decision.detail


def send(env: Env, producer: str, payload: Any) -> str:
    sealed = env.producers.seal(producer, payload)
    env.publisher.send(sealed)
    return sealed.event_id


def test_a_valid_certificate_is_accepted_and_the_destination_is_told(env: Env) -> None:
    cert = fresh()
    event_id = send(env, "BW", issuance(cert))
    decision = env.decision_for("BW", event_id)
    assert decision.decision is Outcome.ACCEPTED
    wait_until(
        lambda: any(
            kind == "ShipmentExpected" and p.certificate == cert for kind, p in env.messages("ZA")
        ),
        what="ShipmentExpected at ZA",
    )
    rows = env.query(
        "SELECT state FROM certificates WHERE certificate_id = %s", (cert.certificate_id,)
    )
    assert rows == [{"state": "ISSUED"}]


def test_issuer_mismatch(env: Env) -> None:
    cert = fresh("BW")
    event_id = send(env, "ZA", issuance(cert))  # ZA publishes BW's certificate
    rejected_with(env, "ZA", event_id, "ISSUER_MISMATCH")


def test_bad_certificate_number(env: Env) -> None:
    cert = fresh()
    wrong = cert.certificate_id[:-2] + ("00" if cert.certificate_id[-2:] != "00" else "01")
    event_id = send(env, "BW", issuance(dataclasses.replace(cert, certificate_id=wrong)))
    rejected_with(env, "BW", event_id, "BAD_CERTIFICATE_NUMBER")


def test_duplicate_certificate_with_other_content(env: Env) -> None:
    cert = fresh()
    first = send(env, "BW", issuance(cert))
    assert env.decision_for("BW", first).decision is Outcome.ACCEPTED
    other = dataclasses.replace(cert, issuing_authority="Someone else")
    detail = rejected_with(env, "BW", send(env, "BW", issuance(other)), "DUPLICATE_CERTIFICATE")
    assert "issuing_authority" in detail


def test_same_certificate_under_a_new_event_id_is_an_accepted_no_op(env: Env) -> None:
    cert = fresh()
    assert env.decision_for("BW", send(env, "BW", issuance(cert))).decision is Outcome.ACCEPTED
    again = env.decision_for("BW", send(env, "BW", issuance(cert)))
    assert again.decision is Outcome.ACCEPTED and "nothing changed" in again.detail


def test_not_a_participant(env: Env) -> None:
    event_id = send(env, "BW", issuance(fresh(destination="SO")))
    rejected_with(env, "BW", event_id, "NOT_A_PARTICIPANT")


def test_participant_suspended_as_destination(env: Env) -> None:
    event_id = send(env, "BW", issuance(fresh(destination="CF")))
    rejected_with(env, "BW", event_id, "PARTICIPANT_SUSPENDED")


def test_invalid_hs_code(env: Env) -> None:
    cert = fresh()
    parcels = (dataclasses.replace(cert.parcels[0], hs_code=HsCode.UNKNOWN), cert.parcels[1])
    event_id = send(env, "BW", issuance(dataclasses.replace(cert, parcels=parcels)))
    rejected_with(env, "BW", event_id, "INVALID_HS_CODE")


def test_totals_mismatch(env: Env) -> None:
    cert = fresh(total_carats=Decimal("999.00"))
    rejected_with(env, "BW", send(env, "BW", issuance(cert)), "TOTALS_MISMATCH")


def test_invalid_dates(env: Env) -> None:
    cert = fresh(date_of_expiry=date(2026, 2, 1))
    rejected_with(env, "BW", send(env, "BW", issuance(cert)), "INVALID_DATES")


def test_non_positive_quantity(env: Env) -> None:
    cert = fresh()
    conf = confirmation(cert, carats=Decimal("0.00"))
    rejected_with(env, "ZA", send(env, "ZA", conf), "NON_POSITIVE_QUANTITY")


def test_unknown_certificate_void_when_no_event_is_missing(env: Env) -> None:
    cert = fresh()  # never issued
    rejected_with(env, "BW", send(env, "BW", voiding(cert)), "UNKNOWN_CERTIFICATE")


def test_void_after_import_confirmation_is_not_allowed(env: Env) -> None:
    cert = fresh()
    assert env.decision_for("BW", send(env, "BW", issuance(cert))).decision is Outcome.ACCEPTED
    assert env.decision_for("ZA", send(env, "ZA", confirmation(cert))).decision is Outcome.ACCEPTED
    rejected_with(env, "BW", send(env, "BW", voiding(cert)), "NOT_ALLOWED")


def test_a_replayed_sequence_under_another_event_id_is_not_allowed(env: Env) -> None:
    first = env.producers.seal("NA", issuance(fresh("NA")))
    env.publisher.send(first)
    assert env.decision_for("NA", first.event_id).decision is Outcome.ACCEPTED
    replay = env.producers.seal("NA", issuance(fresh("NA")), sequence=first.sequence)
    env.publisher.send(replay)
    rejected_with(env, "NA", replay.event_id, "NOT_ALLOWED")


def test_bad_signature(env: Env) -> None:
    sealed = env.producers.seal("BW", issuance(fresh()))
    forged = sealed.body[:-1] + bytes([sealed.body[-1] ^ 1])
    env.publisher.raw(env.user("BW"), "BW.CertificateIssued", forged, message_id=sealed.event_id)
    rejected_with(env, "BW", sealed.event_id, "BAD_SIGNATURE")


def test_a_member_impersonating_another_is_bad_signature(env: Env) -> None:
    # ZA's broker user publishes an envelope that claims BW, signed with ZA's key.
    sealed = env.producers.seal("BW", issuance(fresh()), signer=env.producers.signers["ZA"])
    env.publisher.raw(
        env.user("ZA"), "ZA.CertificateIssued", sealed.body, message_id=sealed.event_id
    )
    detail = rejected_with(env, "ZA", sealed.event_id, "BAD_SIGNATURE")
    assert "BW" in detail and "ZA" in detail


def test_a_key_of_another_member_is_bad_signature(env: Env) -> None:
    sealed = env.producers.seal("BW", issuance(fresh()), signer=env.producers.signers["ZA"])
    env.publisher.send(sealed)  # as kpx-bw, claiming BW, but signed with ZA's key
    rejected_with(env, "BW", sealed.event_id, "BAD_SIGNATURE")


def test_unknown_producer(env: Env) -> None:
    sealed = env.producers.seal(STRANGER, issuance(fresh()))
    env.publisher.send(sealed)
    wait_until(
        lambda: env.query(
            "SELECT 1 FROM event_log WHERE claimed_event_id = %s AND reason = 'UNKNOWN_PRODUCER'",
            (sealed.event_id,),
        ),
        what="UNKNOWN_PRODUCER rejection",
    )
    # A producer the region does not know has no queue the registry may route to.
    assert env.messages(STRANGER) == []


def test_unknown_payload_fingerprint_is_schema_unknown(env: Env) -> None:
    store = env.producers.store
    payload = store.encode("CertificateIssued", Issuance(fresh()).to_record())
    alien = MAGIC + b"\x01" * 8 + payload[HEADER_SIZE:]
    record = _RawPayloadStore(store, alien)
    event_id, body = seal(record, env.producers.signers["BW"], "CertificateIssued", {}, 10_000)
    env.publisher.raw(env.user("BW"), "BW.CertificateIssued", body, message_id=event_id)
    rejected_with(env, "BW", event_id, "SCHEMA_UNKNOWN")


def test_an_unknown_envelope_fingerprint_is_dead_lettered_as_schema_unknown(env: Env) -> None:
    message_id = "7d3f5a10-0000-4000-8000-000000000001"
    env.publisher.raw(
        env.user("BW"), "BW.CertificateIssued", MAGIC + b"\x02" * 8 + b"junk", message_id=message_id
    )
    rejected_with(env, "BW", message_id, "SCHEMA_UNKNOWN")


def test_random_bytes_are_dead_lettered_as_schema_invalid(env: Env) -> None:
    message_id = "7d3f5a10-0000-4000-8000-000000000002"
    env.publisher.raw(
        env.user("ZA"), "ZA.CertificateIssued", b"\x00garbage" * 5, message_id=message_id
    )
    rejected_with(env, "ZA", message_id, "SCHEMA_INVALID")


def test_rejected_and_forged_messages_never_stop_the_consumer(env: Env) -> None:
    env.publisher.raw(env.user("BW"), "BW.CertificateIssued", b"\xc3\x01 not really")
    cert = fresh()
    assert env.decision_for("BW", send(env, "BW", issuance(cert))).decision is Outcome.ACCEPTED


def test_a_key_registered_after_start_is_picked_up(env: Env) -> None:
    from exchange.adapters.postgres import connect, transaction
    from exchange.registry import store

    key = generate_key("BW")
    conn = connect(env.dsn)
    with transaction(conn) as cur:
        store.register_key(cur, key.verify_key)
    conn.close()
    import time

    time.sleep(3.1)  # the keyring reloads at most every 3 s
    sealed = env.producers.seal("BW", issuance(fresh()), signer=key)
    env.publisher.send(sealed)
    assert env.decision_for("BW", sealed.event_id).decision is Outcome.ACCEPTED


class _RawPayloadStore:
    """A schema store stand-in whose payload encoding is fixed bytes (to forge a payload)."""

    def __init__(self, store: Any, payload: bytes) -> None:
        self._store, self._payload = store, payload

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        if name == "Envelope":
            return self._store.encode(name, record)  # type: ignore[no-any-return]
        return self._payload
