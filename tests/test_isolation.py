"""Member isolation (DESIGN §15): no member's validly signed event touches another's certificate.

Every event here is signed with its producer's own, registered key and published by its own
broker user, so the broker and the signature check let it through: only the policy stands
between a member and another member's certificates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from support.registry import (
    Env,
    certificate,
    confirmation,
    issuance,
    running_env,
    voiding,
)
from test_reconciliation import LIMITS, MEMBERS, conf
from test_reconciliation import cert as facts

from exchange.adapters.postgres import connect
from exchange.domain import rules
from exchange.domain.certificate import Container, Party
from exchange.domain.discrepancy import certificate_findings
from exchange.domain.events import Outcome
from exchange.registry import queries


@pytest.fixture(scope="module")
def env(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running_env(make_session_vhost, make_session_database)


_serial = iter(range(700_000, 800_000))


def fresh(member: str = "ZA", **changes: Any) -> Any:
    return certificate(member, next(_serial), **changes)


def send(env: Env, producer: str, payload: Any) -> Any:
    sealed = env.producers.seal(producer, payload)
    env.publisher.send(sealed)
    return env.decision_for(producer, sealed.event_id)


def state(env: Env, certificate_id: str) -> str:
    rows = env.query("SELECT state FROM certificates WHERE certificate_id = %s", (certificate_id,))
    return str(rows[0]["state"])


def verify(env: Env, certificate_id: str) -> tuple[bool, str]:
    conn = connect(env.dsn)
    try:
        return queries.verify(conn, certificate_id, "XS", date(2026, 3, 5))
    finally:
        conn.close()


def test_a_third_partys_confirmation_leaves_the_certificate_issued_and_voidable(
    env: Env,
) -> None:
    cert = fresh(destination="AE")
    assert send(env, "ZA", issuance(cert)).decision is Outcome.ACCEPTED
    meddling = send(env, "BW", confirmation(cert, importer="BW"))
    assert meddling.decision is Outcome.ACCEPTED  # recorded, for the reconciler
    assert "WRONG_DESTINATION" in meddling.detail
    assert state(env, cert.certificate_id) == "ISSUED"
    ok, sentence = verify(env, cert.certificate_id)
    assert ok and "Warning" not in sentence
    assert send(env, "ZA", voiding(cert)).decision is Outcome.ACCEPTED
    assert state(env, cert.certificate_id) == "VOIDED"
    ok, sentence = verify(env, cert.certificate_id)
    assert not ok and "voided" in sentence


def test_a_preconfirmed_next_number_never_blocks_the_issuers_certificate(env: Env) -> None:
    cert = fresh(destination="AE")
    early = send(env, "BW", confirmation(cert, importer="BW"))  # before ZA issues it
    assert early.decision is Outcome.ACCEPTED
    assert send(env, "ZA", issuance(cert)).decision is Outcome.ACCEPTED
    assert state(env, cert.certificate_id) == "ISSUED"
    assert send(env, "ZA", voiding(cert)).decision is Outcome.ACCEPTED
    ok, sentence = verify(env, cert.certificate_id)
    assert not ok and "cancelled" in sentence


def test_the_destinations_confirmation_still_counts_after_a_third_partys(env: Env) -> None:
    cert = fresh(destination="AE")
    send(env, "BW", confirmation(cert, importer="BW"))
    assert send(env, "ZA", issuance(cert)).decision is Outcome.ACCEPTED
    assert send(env, "AE", confirmation(cert, importer="AE")).decision is Outcome.ACCEPTED
    assert state(env, cert.certificate_id) == "IMPORT_CONFIRMED"
    refused = send(env, "ZA", voiding(cert))
    assert (refused.decision, refused.reason) == (Outcome.REJECTED, "NOT_ALLOWED")


def test_an_early_confirmation_by_the_destination_is_matched_and_a_third_partys_is_not(
    env: Env,
) -> None:
    cert = fresh(destination="AE")
    send(env, "BW", confirmation(cert, importer="BW"))
    send(env, "AE", confirmation(cert, importer="AE"))
    assert send(env, "ZA", issuance(cert)).decision is Outcome.ACCEPTED
    assert state(env, cert.certificate_id) == "IMPORT_CONFIRMED"
    history = env.query(
        "SELECT detail FROM certificate_history WHERE certificate_id = %s "
        "AND event_type = 'ImportConfirmed' ORDER BY detail",
        (cert.certificate_id,),
    )
    assert [h["detail"] for h in history] == ["", "WRONG_DESTINATION: confirmed by BW, not AE"]


@pytest.mark.parametrize(
    "changes",
    [
        {"exporter": Party(" ", "1 Mine Road", "ZA", "EX-1")},
        {"importer": Party("Importer Ltd", "2 Bourse St", "AE", "")},
        {"issuing_authority": "  "},
        {"container": Container("", ("S-1",))},
        {"container": Container("C-1", ())},
        {"container": Container("C-1", ("S-1", " "))},
    ],
    ids=["blank-exporter", "blank-licence", "blank-authority", "empty-container", "no-seals",
         "blank-seal"],
)  # fmt: skip
def test_the_registry_refuses_what_the_node_refuses(env: Env, changes: dict[str, Any]) -> None:
    cert = fresh(destination="AE", **changes)
    decision = send(env, "ZA", issuance(cert))
    assert (decision.decision, decision.reason) == (Outcome.REJECTED, "SCHEMA_INVALID")


def test_the_text_field_rule_is_the_one_the_node_runs() -> None:
    cert = certificate("BW", 1, destination="AE")
    assert rules.check_text_fields(cert) is None
    blank = dataclasses.replace(cert, container=Container("C-1", ()))
    refusal = rules.check_text_fields(blank)
    assert refusal is not None and "seal_numbers" in refusal.sentence


def test_a_third_partys_confirmation_is_wrong_destination_not_a_duplicate_import() -> None:
    meddling = conf("e1", importing_participant="AE")
    found = certificate_findings(facts(), [meddling, conf("e2")], LIMITS, "XS", MEMBERS)
    assert {d.kind for d in found} == {"WRONG_DESTINATION"}
    twice = certificate_findings(facts(), [meddling, conf("e2"), conf("e3")], LIMITS, "XS",
                                 MEMBERS)  # fmt: skip
    assert {d.kind for d in twice} == {"WRONG_DESTINATION", "DUPLICATE_IMPORT"}
