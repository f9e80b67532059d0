"""The register at a member's node (DESIGN §14): ``register`` and ``revoke`` operations, each a
signed event in the outbox, and the node's own enforcement — through its real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from support.registry import region_for
from support.services import Database

from exchange.adapters import postgres
from exchange.adapters.postgres import Connection
from exchange.messaging.outbox import OutboxWriter
from exchange.wire.codec import default_store
from exchange.wire.signing import generate_key
from nodes.operations import Node
from nodes.service import migrate


@pytest.fixture
def conn(database: Database) -> Iterator[Connection]:
    migrate(database.url)
    connection = postgres.connect(database.url)
    yield connection
    connection.close()


def node(mode: str, code: str = "BW") -> Node:
    region = region_for("kpx")
    region = dataclasses.replace(region, policy=dataclasses.replace(region.policy, registers=mode))
    return Node(code, region, OutboxWriter(default_store(), generate_key(code)))


def op(kind: str, **body: Any) -> str:
    return json.dumps({"op": kind, **body})


def register(entry_id: str, kind: str, licence: str, **extra: Any) -> str:
    entry = {"kind": kind, "id": entry_id, "name": entry_id, "licence_no": licence,
             "valid_from": "2025-01-01", **extra}  # fmt: skip
    return op("register", entry=entry)


def issue(day: str, licence: str = "EX-1", producer: str | None = None) -> str:
    parcel: dict[str, Any] = {"parcel_no": 1, "hs_code": "7102.31", "carats": "10.00",
                              "value_usd": "1000.00", "origin_country": "BW"}  # fmt: skip
    if producer:
        parcel["producer_id"] = producer
    return op("issue", certificate={
        "destination": "AE", "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": {"name": "E", "address": "A", "country": "BW", "licence_no": licence},
        "importer": {"name": "I", "address": "B", "country": "AE", "licence_no": "IM-1"},
        "date_of_issue": day, "date_of_expiry": "2026-04-30", "parcels": [parcel],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    })  # fmt: skip


def submit(conn: Connection, n: Node, lines: list[str]) -> list[str]:
    return [str(r) for r in n.submit(conn, lines)]


def test_enforce_at_the_node_refuses_on_the_revocation_date_and_accepts_the_day_before(
    conn: Connection,
) -> None:
    lines = [
        register("BW-EXP-1", "EXPORTER", "EX-1"),
        register("BW-COOP-1", "ARTISANAL_COOPERATIVE", "AC-1", members=250, zone="Orapa"),
        op("revoke", id="BW-EXP-1", effective="2026-03-10", reason="licence withdrawn"),
        issue("2026-03-09", producer="BW-COOP-1"),
        issue("2026-03-10"),
        issue("2026-03-09", producer="BW-NOPE"),
        op("declare_production", period="2026-H1", carats="5.00", value_usd="9.00",
           producer="BW-NOPE"),
        op("declare_production", period="2026-H1", carats="5.00", value_usd="9.00",
           producer="BW-COOP-1"),
        op("revoke", id="BW-GHOST", effective="2026-03-10", reason="x"),
    ]  # fmt: skip
    out = submit(conn, node("enforce"), lines)
    assert out[0] == "1 ok BW-EXP-1" and out[1] == "2 ok BW-COOP-1" and out[2] == "3 ok BW-EXP-1"
    assert out[3].startswith("4 ok XS-BW-2026-")
    assert out[4].startswith("5 refused UNLICENSED_EXPORTER exporter.licence_no EX-1")
    assert out[5].startswith("6 refused UNREGISTERED_PRODUCER parcels[0].producer_id BW-NOPE")
    assert out[6].startswith("7 refused UNREGISTERED_PRODUCER producer BW-NOPE")
    assert out[7] == "8 ok 2026-H1/BW-COOP-1"
    assert out[8].startswith("9 refused NOT_ALLOWED")
    rows = postgres.fetch_all(conn, "SELECT event_type, count(*) AS n FROM outbox GROUP BY 1")
    events = {r["event_type"]: r["n"] for r in rows}
    assert events["RegisterEntryRecorded"] == 2 and events["RegisterEntryRevoked"] == 1


def test_record_at_the_node_accepts_what_enforce_refuses(conn: Connection) -> None:
    out = submit(conn, node("record"), [issue("2026-03-10", "NO-LICENCE", "BW-NOPE")])
    assert out[0].startswith("1 ok XS-BW-2026-")


def test_a_partner_keeps_no_register_and_an_id_must_start_with_the_members_code(
    conn: Connection,
) -> None:
    assert submit(conn, node("enforce", "AE"), [register("AE-X-1", "DEALER", "D-1")])[0].startswith(
        "1 refused NOT_ALLOWED"
    )
    out = submit(conn, node("enforce"), [register("ZA-X-1", "DEALER", "D-1")])
    assert out[0].startswith("1 refused SCHEMA_INVALID entry.id")
