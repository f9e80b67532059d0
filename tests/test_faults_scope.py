"""Issue 11, item 15: one scope derivation for the certificate model and the rules.

Before: a partner (AE) issuing a certificate under its own numbering for a shipment to a
member (BW), with ``scope`` omitted, got INTRA_REGIONAL from the model (derived from the
destination alone) and was refused NOT_A_PARTICIPANT by the rules, which want EXTERNAL
whenever the issuer is not a member.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.registry import Env, certificate, confirmation, issuance, running_env

from exchange.domain import rules
from exchange.domain.certificate import CertificateDraft, Scope
from exchange.domain.events import Outcome


@pytest.fixture(scope="module")
def env(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running_env(make_session_vhost, make_session_database)


def _partner_json() -> dict[str, Any]:
    obj = certificate("BW", 1, destination="BW").to_json()
    for key in ("certificate_id", "issuing_member", "scope"):
        obj.pop(key)
    obj["issuing_participant"] = "AE"
    obj["origin"] = {"type": "UNMIXED", "countries": ["RU"]}
    obj["parcels"] = [dict(p, origin_country="RU") for p in obj["parcels"]]
    return obj


def test_a_partners_certificate_to_a_member_is_issued_and_confirmed_there(env: Env) -> None:
    members = env.region.member_codes
    draft = CertificateDraft.from_json(
        _partner_json(), members=members, issuing_participant="AE", issuing_authority="AE"
    )
    assert draft.scope is Scope.EXTERNAL
    book = env.region.book()
    refusal = rules.check_certificate(
        draft, "AE", book, env.region.policy, region_code="XS", members=members
    )
    assert refusal is None, refusal
    cert = draft.with_id("AE-2026-000123")
    issued = env.producers.seal("AE", issuance(cert))
    env.publisher.send(issued)
    assert env.decision_for("AE", issued.event_id).decision is Outcome.ACCEPTED
    confirmed = env.producers.seal("BW", confirmation(cert, importer="BW"))
    env.publisher.send(confirmed)
    assert env.decision_for("BW", confirmed.event_id).decision is Outcome.ACCEPTED
    state = env.query(
        "SELECT state FROM certificates WHERE certificate_id = %s", (cert.certificate_id,)
    )
    assert state == [{"state": "IMPORT_CONFIRMED"}]
