"""The Avro codec: round trips, strict writing, every decode error, writer-version resolution."""

from __future__ import annotations

import copy
import io
import json
import shutil
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.schema import load_schema

from exchange.errors import (
    BadMagic,
    SchemaViolation,
    TrailingBytes,
    TruncatedMessage,
    UndecodableDatum,
    UnknownFingerprint,
)
from exchange.wire.codec import (
    HEADER_SIZE,
    MAGIC,
    SchemaStore,
    default_schemas_dir,
    default_store,
    schema_fingerprint,
)

EVENT_TYPES = (
    "CertificateIssued",
    "CertificateVoided",
    "ImportConfirmed",
    "ProductionDeclared",
    "ParticipantStatusChanged",
    "RegistryDecision",
    "ShipmentExpected",
    "DiscrepancyRaised",
    "RegistryDecisions",
    "ShipmentNotices",
    "AcceptedEvents",
)


def party(name: str, country: str) -> dict[str, Any]:
    return {
        "name": name,
        "address": f"1 Main Road, {country}",
        "country": country,
        "licence_no": f"{country}-LIC-0042",
    }


def parcel(number: int, carats: str, value: str) -> dict[str, Any]:
    return {
        "parcel_no": number,
        "hs_code": "HS_7102_31",
        "carats": Decimal(carats),
        "value_usd": Decimal(value),
        "origin_country": "BW",
        "producer_id": None,
    }


def certificate() -> dict[str, Any]:
    """A valid regional certificate with two parcels."""
    return {
        "certificate_id": "XS-BW-2026-000017-42",
        "issuing_participant": "XS",
        "issuing_member": "BW",
        "issuing_authority": "Botswana Diamond Hub, Ministry of Minerals",
        "destination": "AE",
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": party("Okavango Diamond Company", "BW"),
        "importer": party("Dubai Rough Traders FZE", "AE"),
        "date_of_issue": date(2026, 3, 2),
        "date_of_expiry": date(2026, 5, 1),
        "parcels": [parcel(1, "1234.56", "456789.10"), parcel(2, "100.00", "25000.00")],
        "number_of_parcels": 2,
        "total_carats": Decimal("1334.56"),
        "total_value_usd": Decimal("481789.10"),
        "container": {"container_id": "BW-C-7781", "seal_numbers": ["S-001", "S-002"]},
        "lawful_import_evidence": [],
        "scope": "EXTERNAL",
    }


def decision(at: datetime, leaf_index: int | None) -> dict[str, Any]:
    """A RegistryDecision record: accepted at ``leaf_index``, or rejected when it is None."""
    return {
        "subject_event_id": "3f1c2a9e-8b7d-4c6e-9f01-23456789abcd",
        "subject_event_type": "CertificateIssued",
        "subject_sequence": 17,
        "certificate_id": "XS-BW-2026-000017-42",
        "decision": "REJECTED" if leaf_index is None else "ACCEPTED",
        "reason": "TOTALS_MISMATCH" if leaf_index is None else None,
        "detail": "",
        "decided_at": at,
        "leaf_index": leaf_index,
    }


def example_records() -> dict[str, dict[str, Any]]:
    """A realistic, valid record of every event type and of the Envelope, by record name."""
    at = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
    return {
        "CertificateIssued": {"certificate": certificate()},
        "CertificateVoided": {
            "certificate_id": "XS-BW-2026-000017-42",
            "issuing_participant": "XS",
            "voided_on": date(2026, 3, 3),
            "reason": "Wrong importer licence number",
            "replaced_by": "XS-BW-2026-000018-15",
        },
        "ImportConfirmed": {
            "certificate_id": "XS-BW-2026-000017-42",
            "issuing_participant": "XS",
            "importing_participant": "AE",
            "received_on": date(2026, 3, 9),
            "parcels": 2,
            "carats": Decimal("1334.56"),
            "value_usd": Decimal("481789.10"),
            "seal_intact": True,
            "remarks": "",
        },
        "ProductionDeclared": {
            "participant": "BW",
            "period": "2026-H1",
            "producer_id": "BW-MINE-0007",
            "carats": Decimal("1500000.25"),
            "value_usd": Decimal("210000000.00"),
        },
        "ParticipantStatusChanged": {
            "participant": "VE",
            "status": "SUSPENDED",
            "effective_on": date(2026, 4, 1),
            "reason": "Plenary decision",
        },
        "RegistryDecision": {
            "subject_event_id": "3f1c2a9e-8b7d-4c6e-9f01-23456789abcd",
            "subject_event_type": "CertificateIssued",
            "subject_sequence": 17,
            "certificate_id": "XS-BW-2026-000017-42",
            "decision": "REJECTED",
            "reason": "TOTALS_MISMATCH",
            "detail": "total_carats 1334.57 differs from the sum of the parcels 1334.56",
            "decided_at": at,
            "leaf_index": None,
        },
        "ShipmentExpected": {"certificate": certificate(), "accepted_at": at},
        "DiscrepancyRaised": {
            "discrepancy_id": 9001,
            "kind": "CARAT_MISMATCH",
            "certificate_id": "XS-BW-2026-000017-42",
            "participants": ["BW", "AE"],
            "period": None,
            "detail": "exported 1334.56 ct, imported 1300.00 ct (2.6% > 0.5%)",
            "raised_on": date(2026, 3, 10),
        },
        # The batches of DESIGN §4: every element a whole record of its own.
        "RegistryDecisions": {"decisions": [decision(at, None), decision(at, 41)]},
        "ShipmentNotices": {
            "expected": [{"certificate": certificate(), "accepted_at": at}],
            "cancelled": [
                {
                    "certificate_id": "XS-BW-2026-000016-69",
                    "issuing_participant": "BW",
                    "voided_on": date(2026, 3, 1),
                    "reason": "exporter withdrew",
                    "replaced_by": None,
                    "cancelled_at": at,
                }
            ],
        },
        "AcceptedEvents": {
            "events": [
                {"leaf_index": 41, "envelope": b"\xc3\x01envelope"},
                {"leaf_index": None, "envelope": b"\xc3\x01another"},
            ]
        },
        "Envelope": {
            "event_id": "0b8f5a52-5d2c-4a5e-8f0e-6a1d2c3b4a59",
            "event_type": "CertificateIssued",
            "producer": "BW",
            "sequence": 17,
            "produced_at": at,
            "key_id": "BW-2026-01",
            "payload": b"\xc3\x01payload",
            "signature": b"\x00" * 64,
        },
    }


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return default_store()


def issued() -> dict[str, Any]:
    return copy.deepcopy(example_records()["CertificateIssued"])


@pytest.mark.parametrize("name", [*EVENT_TYPES, "Envelope"])
def test_every_record_type_round_trips_unchanged(store: SchemaStore, name: str) -> None:
    record = example_records()[name]
    assert store.decode(store.encode(name, record)) == (name, record)


def test_a_message_is_the_marker_the_fingerprint_and_the_datum(store: SchemaStore) -> None:
    data = store.encode("CertificateVoided", example_records()["CertificateVoided"])
    assert data[:2] == b"\xc3\x01"
    assert data[2:HEADER_SIZE] == store.fingerprint("CertificateVoided")


def test_the_store_knows_every_event_type(store: SchemaStore) -> None:
    assert set(EVENT_TYPES) <= set(store.names())


def test_the_default_store_is_loaded_once() -> None:
    assert default_store() is default_store()


def test_decoding_with_the_expected_name_returns_the_record(store: SchemaStore) -> None:
    data = store.encode("CertificateIssued", issued())
    assert store.decode(data, expected="CertificateIssued")[1] == issued()


def test_a_field_with_a_default_may_be_omitted_and_decodes_as_the_default(
    store: SchemaStore,
) -> None:
    record = issued()
    del record["certificate"]["parcels"][0]["origin_country"]
    _, decoded = store.decode(store.encode("CertificateIssued", record))
    assert decoded["certificate"]["parcels"][0]["origin_country"] is None


def test_a_missing_required_field_in_an_array_record_is_named_by_path(store: SchemaStore) -> None:
    record = issued()
    del record["certificate"]["parcels"][1]["carats"]
    with pytest.raises(SchemaViolation, match=r"certificate\.parcels\[1\]\.carats: missing"):
        store.encode("CertificateIssued", record)


def test_an_unknown_nested_field_is_named_by_path(store: SchemaStore) -> None:
    record = issued()
    record["certificate"]["container"]["colour"] = "red"
    with pytest.raises(SchemaViolation, match=r"certificate\.container\.colour: unknown field"):
        store.encode("CertificateIssued", record)


def test_an_unknown_top_level_field_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["CertificateVoided"], "voided_by": "clerk"}
    with pytest.raises(SchemaViolation, match="voided_by: unknown field"):
        store.encode("CertificateVoided", record)


def test_a_decimal_with_more_places_than_the_scale_is_refused_not_rounded(
    store: SchemaStore,
) -> None:
    record = issued()
    record["certificate"]["parcels"][0]["value_usd"] = Decimal("456789.105")
    with pytest.raises(SchemaViolation, match=r"parcels\[0\]\.value_usd: more than 2 decimal"):
        store.encode("CertificateIssued", record)


def test_a_decimal_beyond_the_precision_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["ProductionDeclared"], "carats": Decimal("1" * 17 + ".00")}
    with pytest.raises(SchemaViolation, match="carats: more than 18 significant digits"):
        store.encode("ProductionDeclared", record)


def test_a_float_for_a_decimal_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["ProductionDeclared"], "carats": 1.25}
    with pytest.raises(SchemaViolation, match="carats: expected a finite Decimal"):
        store.encode("ProductionDeclared", record)


def test_an_int_outside_the_avro_int_range_is_refused(store: SchemaStore) -> None:
    record = issued()
    record["certificate"]["number_of_parcels"] = 2**31
    with pytest.raises(SchemaViolation, match="number_of_parcels: expected an Avro int"):
        store.encode("CertificateIssued", record)


def test_a_bool_for_an_int_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["ImportConfirmed"], "parcels": True}
    with pytest.raises(SchemaViolation, match="parcels: expected an Avro int"):
        store.encode("ImportConfirmed", record)


def test_a_naive_datetime_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["RegistryDecision"], "decided_at": datetime(2026, 3, 2, 9)}
    with pytest.raises(SchemaViolation, match="decided_at: expected a timezone-aware datetime"):
        store.encode("RegistryDecision", record)


def test_a_date_given_as_a_string_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["CertificateVoided"], "voided_on": "2026-03-03"}
    with pytest.raises(SchemaViolation, match=r"voided_on: expected a datetime\.date"):
        store.encode("CertificateVoided", record)


def test_an_unknown_enum_symbol_in_an_optional_field_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["RegistryDecision"], "reason": "TOO_SHINY"}
    with pytest.raises(SchemaViolation, match="reason: expected one of"):
        store.encode("RegistryDecision", record)


def test_a_malformed_uuid_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["Envelope"], "event_id": "not-a-uuid"}
    with pytest.raises(SchemaViolation, match="event_id: expected a uuid string"):
        store.encode("Envelope", record)


def test_none_for_a_required_string_is_refused(store: SchemaStore) -> None:
    record = {**example_records()["CertificateVoided"], "reason": None}
    with pytest.raises(SchemaViolation, match="reason: expected a str"):
        store.encode("CertificateVoided", record)


def test_an_unknown_record_name_is_refused(store: SchemaStore) -> None:
    with pytest.raises(SchemaViolation, match="unknown record type 'CertificateStolen'"):
        store.encode("CertificateStolen", {})


def test_bytes_without_the_single_object_marker_are_bad_magic(store: SchemaStore) -> None:
    data = store.encode("CertificateVoided", example_records()["CertificateVoided"])
    with pytest.raises(BadMagic, match="c302"):
        store.decode(b"\xc3\x02" + data[2:])


def test_a_header_shorter_than_ten_bytes_is_bad_magic(store: SchemaStore) -> None:
    with pytest.raises(BadMagic, match="10-byte header"):
        store.decode(MAGIC + b"\x01\x02\x03")


def test_an_unreleased_fingerprint_is_unknown_and_named_in_hex(store: SchemaStore) -> None:
    with pytest.raises(UnknownFingerprint, match="0102030405060708"):
        store.decode(MAGIC + bytes(range(1, 9)) + b"\x00")


def test_a_message_cut_short_is_truncated(store: SchemaStore) -> None:
    data = store.encode("CertificateIssued", issued())
    with pytest.raises(TruncatedMessage, match="CertificateIssued"):
        store.decode(data[:-20])


def test_a_message_cut_inside_a_number_is_truncated(store: SchemaStore) -> None:
    # decided_at is the last field: a multi-byte varint whose final byte is cut off
    data = store.encode("RegistryDecision", example_records()["RegistryDecision"])
    with pytest.raises(TruncatedMessage):
        store.decode(data[:-1])


def test_bytes_after_the_datum_are_trailing_and_counted(store: SchemaStore) -> None:
    data = store.encode("CertificateVoided", example_records()["CertificateVoided"])
    with pytest.raises(TrailingBytes, match="3 bytes"):
        store.decode(data + b"\x00\x00\x00")


def test_another_record_than_the_expected_one_is_undecodable(store: SchemaStore) -> None:
    data = store.encode("CertificateVoided", example_records()["CertificateVoided"])
    with pytest.raises(
        UndecodableDatum, match="expected a CertificateIssued, got a CertificateVoided"
    ):
        store.decode(data, expected="CertificateIssued")


def voided_header(store: SchemaStore) -> bytes:
    return MAGIC + store.fingerprint("CertificateVoided")


def test_an_enum_index_out_of_range_is_undecodable(store: SchemaStore) -> None:
    header = MAGIC + store.fingerprint("ParticipantStatusChanged")
    datum = b"\x04VE" + b"\x7e" + b"\x00\x00"  # status index 63 of 5 symbols
    with pytest.raises(UndecodableDatum, match="ParticipantStatusChanged"):
        store.decode(header + datum)


def test_invalid_utf8_is_undecodable(store: SchemaStore) -> None:
    with pytest.raises(UndecodableDatum, match="UnicodeDecodeError"):
        store.decode(voided_header(store) + b"\x04\xff\xfe")


def test_a_negative_length_is_undecodable(store: SchemaStore) -> None:
    with pytest.raises(UndecodableDatum, match="length of -1 bytes"):
        store.decode(voided_header(store) + b"\x01")


def test_a_hostile_length_is_refused_without_allocating_it(store: SchemaStore) -> None:
    hostile = voided_header(store) + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"  # 2**62 bytes
    tracemalloc.start()
    try:
        with pytest.raises(UndecodableDatum, match="impossible"):
            store.decode(hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_hostile_array_count_is_refused_without_allocating_it(store: SchemaStore) -> None:
    # CertificateVoided has no array; DiscrepancyRaised.participants is an array of strings
    header = MAGIC + store.fingerprint("DiscrepancyRaised")
    hostile = header + b"\x02\x02" + b"\x00" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedMessage):
            store.decode(hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_non_bytes_message_is_bad_magic(store: SchemaStore) -> None:
    with pytest.raises(BadMagic):
        store.decode("C3 01 not bytes")  # type: ignore[arg-type]


@pytest.fixture
def schemas_with_an_old_release(tmp_path: Path) -> Path:
    """A schemas dir whose released v0 CertificateVoided predates ``replaced_by``."""
    root = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), root, ignore=shutil.ignore_patterns("released"))
    old = root / "released" / "v0"
    old.mkdir(parents=True)
    voided = json.loads((root / "kpx.CertificateVoided.avsc").read_text())
    voided["fields"] = [f for f in voided["fields"] if f["name"] != "replaced_by"]
    (old / "kpx.CertificateVoided.avsc").write_text(json.dumps(voided))
    return root


def test_a_record_written_with_an_old_release_decodes_with_the_new_default(
    schemas_with_an_old_release: Path,
) -> None:
    old_schema = load_schema(
        str(schemas_with_an_old_release / "released" / "v0" / "kpx.CertificateVoided.avsc")
    )
    old_record = {k: v for k, v in example_records()["CertificateVoided"].items()}
    del old_record["replaced_by"]
    datum = io.BytesIO()
    schemaless_writer(datum, old_schema, old_record)
    message = MAGIC + schema_fingerprint(old_schema) + datum.getvalue()
    name, record = SchemaStore.load(schemas_with_an_old_release).decode(message)
    assert (name, record) == ("CertificateVoided", {**old_record, "replaced_by": None})


def test_an_old_release_has_its_own_fingerprint(schemas_with_an_old_release: Path) -> None:
    old_schema = load_schema(
        str(schemas_with_an_old_release / "released" / "v0" / "kpx.CertificateVoided.avsc")
    )
    store = SchemaStore.load(schemas_with_an_old_release)
    assert schema_fingerprint(old_schema) != store.fingerprint("CertificateVoided")
