"""Certificate and event payloads: operation JSON, Avro records (through fastavro), display JSON."""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import load_schema
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.certificate import (
    Certificate,
    CertificateDraft,
    HsCode,
    Scope,
    from_symbol,
    to_amount,
)
from exchange.domain.events import (
    EVENT_TYPES,
    PAYLOAD_TYPES,
    Decision,
    DiscrepancyKind,
    DiscrepancyNotice,
    ImportConfirmation,
    Issuance,
    Outcome,
    ParticipantStatus,
    Payload,
    ProductionDeclaration,
    ShipmentNotice,
    StatusChange,
    Voiding,
    payload_from_record,
)
from exchange.errors import Refusal

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
ISSUER = {"issuing_participant": "XS", "issuing_member": "BW", "issuing_authority": "MoME"}


def issue_json(**changes: Any) -> dict[str, Any]:
    """A valid ``issue`` certificate as a node receives it (JSON with decimals)."""
    cert: dict[str, Any] = {
        "certificate_id": "XS-BW-2026-0000001-03",
        "destination": "AE",
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": {
            "name": "Okavango",
            "address": "Gaborone",
            "country": "BW",
            "licence_no": "E1",
        },
        "importer": {
            "name": "Hub Trading",
            "address": "Dubai",
            "country": "AE",
            "licence_no": "I9",
        },
        "date_of_issue": "2026-01-15",
        "date_of_expiry": "2026-03-01",
        "parcels": [
            {"parcel_no": 1, "hs_code": "7102.31", "carats": "100.50", "value_usd": "20000"},
            {"parcel_no": 2, "hs_code": "7102.21", "carats": 49.5, "value_usd": 500},
        ],
        "container": {"container_id": "C-1", "seal_numbers": ["S-1", "S-2"]},
    }
    cert.update(changes)
    return json.loads(json.dumps(cert), parse_float=Decimal)


def parse(obj: dict[str, Any]) -> Certificate:
    return Certificate.from_json(obj, members=("BW", "ZA"), **ISSUER)


def refusal_of(obj: dict[str, Any]) -> Refusal:
    with pytest.raises(Refusal) as caught:
        parse(obj)
    return caught.value


def avro_round_trip(name: str, record: dict[str, Any]) -> dict[str, Any]:
    schema = load_schema(str(SCHEMAS / f"kpx.{name}.avsc"))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    result: dict[str, Any] = fastavro.schemaless_reader(buffer, schema, schema)
    return result


# --- amounts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal("1.5"), "1.50"), (7, "7.00"), ("0.01", "0.01"), ("12.500", "12.50"), (2.25, "2.25")],
)
def test_to_amount_quantizes_accepted_numbers_to_cents(value: object, expected: str) -> None:
    assert str(to_amount(value, "carats")) == expected


@pytest.mark.parametrize(
    "value",
    [
        Decimal("1.005"),
        0.125,
        Decimal("NaN"),
        Decimal("Infinity"),
        float("inf"),
        "1,000",
        "1e3",
        " 1",
        True,
        None,
        [1],
        "10" * 9,
    ],
)
def test_to_amount_refuses_what_is_not_a_two_place_number(value: object) -> None:
    with pytest.raises(Refusal) as caught:
        to_amount(value, "parcels[0].carats")
    assert caught.value.code == "SCHEMA_INVALID"
    assert caught.value.sentence.startswith("parcels[0].carats must ")


def test_to_amount_names_the_value_it_refuses() -> None:
    with pytest.raises(Refusal) as caught:
        to_amount(Decimal("1.005"), "total_carats")
    assert caught.value.sentence == "total_carats must have at most 2 decimal places, got 1.005"


# --- operation JSON ------------------------------------------------------------------------


def test_a_valid_issue_certificate_parses_with_the_nodes_defaults() -> None:
    cert = parse(issue_json())
    assert (cert.issuing_participant, cert.issuing_member) == ("XS", "BW")
    assert cert.parcels[1].carats == Decimal("49.50")
    assert cert.parcels[0].hs_code is HsCode.HS_7102_31


def test_omitted_totals_are_computed_from_the_parcels() -> None:
    cert = parse(issue_json())
    assert cert.number_of_parcels == 2
    assert cert.total_carats == Decimal("150.00")
    assert cert.total_value_usd == Decimal("20500.00")


def test_stated_totals_are_kept_as_stated_for_the_rules_to_check() -> None:
    cert = parse(issue_json(total_carats="151", number_of_parcels=3))
    assert (cert.total_carats, cert.number_of_parcels) == (Decimal("151.00"), 3)


def test_an_omitted_scope_follows_from_a_member_destination() -> None:
    assert parse(issue_json(destination="ZA")).scope is Scope.INTRA_REGIONAL
    assert parse(issue_json()).scope is Scope.EXTERNAL


def test_a_value_in_the_json_wins_over_the_nodes_default() -> None:
    assert parse(issue_json(issuing_member="ZA")).issuing_member == "ZA"


def test_a_draft_without_a_number_takes_the_allocated_one() -> None:
    obj = issue_json()
    del obj["certificate_id"]
    draft = CertificateDraft.from_json(obj, members=("BW",), **ISSUER)
    assert draft.certificate_id is None
    assert draft.with_id("XS-BW-2026-0000002-97").certificate_id == "XS-BW-2026-0000002-97"


def test_certificate_from_json_requires_a_number() -> None:
    obj = issue_json()
    del obj["certificate_id"]
    assert refusal_of(obj).sentence == "certificate_id is missing"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["destination"], "destination is missing"),
        (["origin", "type"], "origin.type is missing"),
        (["exporter", "licence_no"], "exporter.licence_no is missing"),
        (["parcels", 1, "carats"], "parcels[1].carats is missing"),
        (["container", "seal_numbers"], "container.seal_numbers is missing"),
        (["date_of_expiry"], "date_of_expiry is missing"),
    ],
)
def test_a_missing_field_is_refused_naming_its_path(path: list[Any], expected: str) -> None:
    obj = issue_json()
    target = obj
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    refusal = refusal_of(obj)
    assert (refusal.code, refusal.sentence) == ("SCHEMA_INVALID", expected)


@pytest.mark.parametrize(
    ("changes", "start"),
    [
        ({"destination": 12}, "destination must be a non-empty string, got 12"),
        ({"date_of_issue": "15/01/2026"}, "date_of_issue must be an ISO date"),
        ({"date_of_issue": "2026-02-30"}, "date_of_issue must be an ISO date"),
        ({"parcels": {"parcel_no": 1}}, "parcels must be a list"),
        ({"origin": {"type": "BLENDED", "countries": []}}, "origin.type must be one of"),
        ({"scope": "GLOBAL"}, "scope must be one of"),
        ({"number_of_parcels": True}, "number_of_parcels must be an integer"),
        ({"lawful_import_evidence": [""]}, "lawful_import_evidence[0] must be a non-empty"),
        ({"exporter": "Okavango"}, "exporter must be an object"),
        ({"total_carat": "1"}, "total_carat is not a known field"),
    ],
)
def test_an_ill_typed_field_is_refused_naming_its_path(changes: dict[str, Any], start: str) -> None:
    refusal = refusal_of(issue_json(**changes))
    assert refusal.code == "SCHEMA_INVALID"
    assert refusal.sentence.startswith(start)


def test_an_unlisted_hs_code_is_refused_as_invalid_hs_code_with_its_value() -> None:
    obj = issue_json()
    obj["parcels"][0]["hs_code"] = "7102.99"
    refusal = refusal_of(obj)
    assert refusal.code == "INVALID_HS_CODE"
    assert "parcels[0].hs_code" in refusal.sentence and "'7102.99'" in refusal.sentence


# --- records and display JSON --------------------------------------------------------------


def test_the_record_survives_fastavro_with_the_certificate_schema() -> None:
    cert = parse(issue_json())
    assert Certificate.from_record(avro_round_trip("Certificate", cert.to_record())) == cert


def test_the_record_uses_avro_symbols_and_keeps_decimals_and_dates() -> None:
    record = parse(issue_json()).to_record()
    assert record["parcels"][0]["hs_code"] == "HS_7102_31"
    assert record["total_carats"] == Decimal("150.00")
    assert record["date_of_issue"] == date(2026, 1, 15)
    assert next(iter(record)) == "certificate_id"


def test_display_json_uses_two_place_strings_iso_dates_and_hs_headings() -> None:
    shown = parse(issue_json()).to_json()
    assert shown["total_value_usd"] == "20500.00"
    assert shown["date_of_expiry"] == "2026-03-01"
    assert shown["parcels"][1]["hs_code"] == "7102.21"
    assert json.loads(json.dumps(shown)) == shown


def test_display_json_parses_back_to_the_same_certificate() -> None:
    cert = parse(issue_json())
    assert Certificate.from_json(cert.to_json()) == cert


def test_an_unknown_symbol_from_a_newer_schema_reads_as_unknown() -> None:
    assert from_symbol(HsCode, "HS_7102_99") is HsCode.UNKNOWN


@given(
    st.lists(
        st.tuples(st.decimals("0.01", "99999", places=2), st.decimals("0.01", "9999999", places=2)),
        min_size=1,
        max_size=6,
    )
)
def test_any_parcel_amounts_round_trip_through_json_and_avro(
    amounts: list[tuple[Decimal, Decimal]],
) -> None:
    parcels = [
        {"parcel_no": i + 1, "hs_code": "7102.10", "carats": str(c), "value_usd": str(v)}
        for i, (c, v) in enumerate(amounts)
    ]
    cert = parse(issue_json(parcels=parcels))
    assert cert.total_carats == sum(c for c, _ in amounts)
    assert Certificate.from_json(cert.to_json()) == cert
    assert Certificate.from_record(avro_round_trip("Certificate", cert.to_record())) == cert


# --- event payloads ------------------------------------------------------------------------

NOW = datetime(2026, 1, 16, 9, 30, tzinfo=UTC)


def payloads() -> list[Payload]:
    cert = parse(issue_json())
    return [
        Issuance(cert),
        Voiding("XS-BW-2026-0000001-03", "XS", date(2026, 1, 20), "typo", None),
        ImportConfirmation(
            cert.certificate_id,
            "XS",
            "AE",
            date(2026, 2, 1),
            2,
            Decimal("150.00"),
            Decimal("20500.00"),
            True,
            "",
        ),
        ProductionDeclaration("BW", "2026-H1", "MINE-7", Decimal("10.00"), Decimal("99.00")),
        StatusChange("CF", ParticipantStatus.SUSPENDED, date(2013, 5, 23), "coup"),
        Decision(
            "0b7c4c7e-9a59-4d35-a4a6-9ac3c0a9a111",
            "CertificateIssued",
            7,
            cert.certificate_id,
            Outcome.REJECTED,
            "TOTALS_MISMATCH",
            "total_carats is 1.00 but ...",
            NOW,
        ),
        ShipmentNotice(cert, NOW),
        DiscrepancyNotice(
            3,
            DiscrepancyKind.SEAL_BROKEN,
            cert.certificate_id,
            ("BW", "AE"),
            None,
            "seal",
            date(2026, 2, 2),
        ),
    ]


@pytest.mark.parametrize("payload", payloads(), ids=lambda p: type(p).EVENT_TYPE)
def test_every_payload_survives_fastavro_with_its_schema(payload: Payload) -> None:
    record = avro_round_trip(payload.EVENT_TYPE, payload.to_record())
    assert payload_from_record(payload.EVENT_TYPE, record) == payload


def test_there_is_one_payload_class_per_event_type() -> None:
    assert tuple(PAYLOAD_TYPES) == EVENT_TYPES
    schema = json.loads((SCHEMAS / "kpx.EventType.avsc").read_text(encoding="utf-8"))
    assert set(EVENT_TYPES) == set(schema["symbols"]) - {"UNKNOWN"}


def test_an_unknown_event_type_is_refused_as_schema_unknown() -> None:
    with pytest.raises(Refusal) as caught:
        payload_from_record("UNKNOWN", {})
    assert caught.value.code == "SCHEMA_UNKNOWN"


def test_a_void_operation_defaults_its_date_to_today() -> None:
    op = {"op": "void", "certificate_id": "XS-BW-2026-0000001-03", "reason": "typo"}
    voiding = Voiding.from_json(op, issuing_participant="XS", today=date(2026, 1, 20))
    assert voiding == Voiding("XS-BW-2026-0000001-03", "XS", date(2026, 1, 20), "typo", None)


def test_a_confirm_import_operation_parses_with_empty_remarks() -> None:
    op = json.loads(
        '{"op":"confirm_import","certificate_id":"XS-BW-2026-0000001-03",'
        '"issuing_participant":"XS","received_on":"2026-02-01","parcels":2,"carats":150.0,'
        '"value_usd":20500,"seal_intact":false,"remarks":""}',
        parse_float=Decimal,
    )
    confirmation = ImportConfirmation.from_json(op, importing_participant="AE")
    assert (confirmation.carats, confirmation.seal_intact) == (Decimal("150.00"), False)


def test_a_confirm_import_without_seal_intact_is_refused_naming_it() -> None:
    op = {
        "certificate_id": "X",
        "issuing_participant": "XS",
        "received_on": "2026-02-01",
        "parcels": 2,
        "carats": "1",
        "value_usd": "1",
    }
    with pytest.raises(Refusal, match="seal_intact is missing"):
        ImportConfirmation.from_json(op, importing_participant="AE")


def test_a_declare_production_operation_maps_producer_to_producer_id() -> None:
    op = {
        "op": "declare_production",
        "period": "2026-H1",
        "carats": "5",
        "value_usd": "9",
        "producer": "BW-MINE-7",
    }
    declared = ProductionDeclaration.from_json(op, participant="BW")
    assert declared.producer_id == "BW-MINE-7"


def test_a_production_period_that_is_no_half_year_is_refused() -> None:
    op = {"period": "2026-Q1", "carats": "5", "value_usd": "9", "producer": "M"}
    with pytest.raises(Refusal, match="period must be a half-year"):
        ProductionDeclaration.from_json(op, participant="BW")


def test_from_json_does_not_change_its_input() -> None:
    obj = issue_json()
    before = copy.deepcopy(obj)
    parse(obj)
    assert obj == before
