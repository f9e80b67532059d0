"""Shipment notices spliced from the certificates' own bytes (exchange/wire/spliced.py).

The registry builds a ShipmentNotices from each accepted certificate's datum as it arrived
instead of encoding the decoded record again: the bytes must be the ones fastavro writes.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from exchange.wire.codec import SchemaStore, default_schemas_dir, default_store
from exchange.wire.spliced import NoticeSplicer, timestamp_micros, zigzag_long


def _certificate(serial: int, parcels: int) -> dict[str, Any]:
    return {
        "certificate_id": f"XS-BW-2026-{serial:07d}-42",
        "issuing_participant": "XS",
        "issuing_member": "BW" if serial % 2 else None,
        "issuing_authority": "Ministère des Mines — Gaborone",
        "destination": "AE",
        "origin": {"type": "MIXED", "countries": ["BW", "ZA"][: 1 + serial % 2]},
        "exporter": {"name": "Ex", "address": "1 Road", "country": "BW", "licence_no": "L-1"},
        "importer": {"name": "Im", "address": "2 Road", "country": "AE", "licence_no": "L-2"},
        "date_of_issue": date(2026, 3, 2),
        "date_of_expiry": date(2026, 5, 1),
        "parcels": [
            {
                "parcel_no": i + 1,
                "hs_code": "HS_7102_31",
                "carats": Decimal("1234.56") + i,
                "value_usd": Decimal("-0.01") if i == 1 else Decimal("456789.10"),
                "origin_country": "BW",
                "producer_id": "MINE-1" if i % 2 else None,
            }
            for i in range(parcels)
        ],
        "number_of_parcels": parcels,
        "total_carats": Decimal("0.00"),
        "total_value_usd": Decimal("99999999.99"),
        "container": {"container_id": "C-1", "seal_numbers": []},
        "lawful_import_evidence": ["KP-AE-1"] * (serial % 3),
        "scope": "EXTERNAL",
    }


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return default_store()


def test_the_shipped_schemas_have_the_shape_splicing_needs(store: SchemaStore) -> None:
    assert NoticeSplicer(store).enabled


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 12, 1, 17, 30, 5, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # a negative long
        datetime(2026, 6, 1, 12, 0, tzinfo=UTC) + timedelta(hours=2),
    ],
)
def test_spliced_notices_are_the_bytes_fastavro_writes(store: SchemaStore, at: datetime) -> None:
    splicer = NoticeSplicer(store)
    certificates = [_certificate(serial, parcels) for serial, parcels in enumerate((1, 3, 0, 7))]
    datums = []
    for cert in certificates:
        payload = store.encode("CertificateIssued", {"certificate": copy.deepcopy(cert)})
        datum = splicer.datum(payload)
        assert datum is not None
        datums.append(datum)
    spliced = splicer.expected([(d, at) for d in datums])
    record = {"expected": [{"certificate": c, "accepted_at": at} for c in certificates]}
    assert spliced == store.encode("ShipmentNotices", {**record, "cancelled": []})
    _, decoded = store.decode(spliced, expected="ShipmentNotices")
    assert [n["certificate"]["certificate_id"] for n in decoded["expected"]] == [
        c["certificate_id"] for c in certificates
    ]
    assert splicer.expected([]) == store.encode("ShipmentNotices", {})


@pytest.mark.parametrize("n", [0, 1, -1, 63, -64, 64, 2**31, -(2**40), 2**63 - 1, -(2**63)])
def test_a_long_is_zigzag_varint_encoded_as_fastavro_does(n: int) -> None:
    out = io.BytesIO()
    schemaless_writer(out, "long", n)
    assert zigzag_long(n) == out.getvalue()


def test_timestamp_micros_is_exact_far_from_the_epoch() -> None:
    at = datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)
    assert timestamp_micros(at) == 9_223_372_036_854_775


def test_a_payload_of_another_schema_version_is_not_spliced(store: SchemaStore) -> None:
    payload = store.encode("CertificateIssued", {"certificate": _certificate(1, 1)})
    older = payload[:2] + bytes(8) + payload[10:]  # another writer fingerprint
    assert NoticeSplicer(store).datum(older) is None
    assert NoticeSplicer(store).datum(store.encode("ShipmentNotices", {})) is None


def test_another_shape_of_the_notice_schema_turns_splicing_off(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), schemas, ignore=shutil.ignore_patterns("released"))
    path = schemas / "kpx.ShipmentExpected.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].reverse()  # accepted_at first: the certificate's bytes no longer lead
    path.write_text(json.dumps(schema))
    assert not NoticeSplicer(SchemaStore.load(schemas)).enabled
