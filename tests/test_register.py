"""The register (DESIGN §14) as pure rules: validity, revocation edges, enforce and record."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from test_rules import certificate, parcel, partner_certificate

from exchange.domain.events import PAYLOAD_TYPES
from exchange.domain.region import parse_region
from exchange.domain.register import (
    EntryKind,
    Register,
    RegisterEntry,
    Revocation,
    certificate_refusal,
    check_entry,
    declaration_refusal,
    renewal_refusal,
    revocation_refusal,
    unlicensed_exporter,
    unregistered_declaration,
    unregistered_parcel,
)
from exchange.domain.supply import SupplyPeriod, producer_exceeded, supply_balances
from exchange.errors import ConfigError, Refusal
from exchange.wire.codec import default_store

REVOKED = date(2026, 3, 1)


def entry(
    entry_id: str = "BW-EXP-1", kind: EntryKind = EntryKind.EXPORTER, **kw: object
) -> RegisterEntry:
    values: dict[str, object] = {
        "member": "BW",
        "kind": kind,
        "entry_id": entry_id,
        "name": "Okavango Diamond Company",
        "licence_no": "EXP-001",
        "valid_from": date(2025, 1, 1),
    }
    values.update(kw)
    return RegisterEntry(**values)  # type: ignore[arg-type]


def exporter_register() -> Register:
    register = Register()
    register.add(entry())
    register.add(entry("BW-MINE-1", EntryKind.MINE, licence_no="ML-1", name="Jwaneng"))
    coop = entry("BW-COOP-1", EntryKind.ARTISANAL_COOPERATIVE, licence_no="AC-1", members=120)
    register.add(coop)
    return register


def cert_on(day: date, licence: str = "EXP-001", producer: str | None = None):  # type: ignore[no-untyped-def]
    base = certificate()
    parcels = tuple(replace(p, producer_id=producer) for p in base.parcels)
    return replace(
        base,
        date_of_issue=day,
        date_of_expiry=day + timedelta(days=30),
        exporter=replace(base.exporter, licence_no=licence),
        parcels=parcels,
    )


def test_a_licence_is_valid_the_day_before_its_revocation_takes_effect() -> None:
    register = exporter_register()
    register.revoke(Revocation("BW", "BW-EXP-1", REVOKED, "licence withdrawn"))
    assert register.valid_on("BW", "BW-EXP-1", REVOKED - timedelta(days=1))


def test_a_licence_is_not_valid_on_the_day_its_revocation_takes_effect() -> None:
    register = exporter_register()
    register.revoke(Revocation("BW", "BW-EXP-1", REVOKED, "licence withdrawn"))
    assert not register.valid_on("BW", "BW-EXP-1", REVOKED)
    assert not register.valid_on("BW", "BW-EXP-1", REVOKED + timedelta(days=1))


def test_a_licence_granted_again_after_its_revocation_is_valid_from_its_new_start() -> None:
    register = exporter_register()
    register.revoke(Revocation("BW", "BW-EXP-1", REVOKED, "licence withdrawn"))
    register.add(entry(valid_from=date(2026, 6, 1)))
    assert not register.valid_on("BW", "BW-EXP-1", date(2026, 5, 31))
    assert register.valid_on("BW", "BW-EXP-1", date(2026, 6, 1))


def test_valid_until_is_the_last_valid_day() -> None:
    register = Register()
    register.add(entry(valid_until=date(2026, 6, 30)))
    assert register.valid_on("BW", "BW-EXP-1", date(2026, 6, 30))
    assert not register.valid_on("BW", "BW-EXP-1", date(2026, 7, 1))
    assert not register.valid_on("BW", "BW-EXP-1", date(2024, 12, 31))


def test_an_exporter_licensed_on_the_date_of_issue_passes() -> None:
    assert unlicensed_exporter(cert_on(date(2026, 2, 28)), exporter_register()) is None


def test_an_exporter_whose_licence_was_revoked_by_the_date_of_issue_is_unlicensed() -> None:
    register = exporter_register()
    register.revoke(Revocation("BW", "BW-EXP-1", REVOKED, "licence withdrawn"))
    refusal = unlicensed_exporter(cert_on(REVOKED), register)
    assert refusal is not None and refusal.code == "UNLICENSED_EXPORTER"
    assert "EXP-001" in refusal.sentence and "2026-03-01" in refusal.sentence


def test_an_unknown_licence_number_is_unlicensed() -> None:
    refusal = unlicensed_exporter(cert_on(date(2026, 2, 1), "EXP-999"), exporter_register())
    assert refusal is not None and refusal.code == "UNLICENSED_EXPORTER"


def test_a_mine_licence_does_not_license_an_exporter() -> None:
    refusal = unlicensed_exporter(cert_on(date(2026, 2, 1), "ML-1"), exporter_register())
    assert refusal is not None and refusal.code == "UNLICENSED_EXPORTER"


def test_a_partners_certificate_is_not_checked_against_the_regions_register() -> None:
    assert unlicensed_exporter(partner_certificate(), Register()) is None
    assert unregistered_parcel(partner_certificate(), Register()) is None


def test_a_parcel_naming_a_licensed_cooperative_passes() -> None:
    cert = cert_on(date(2026, 2, 1), producer="BW-COOP-1")
    assert unregistered_parcel(cert, exporter_register()) is None


@pytest.mark.parametrize("producer", ["BW-NOPE-1", "BW-EXP-1"])
def test_a_parcel_naming_no_registered_producer_is_refused(producer: str) -> None:
    refusal = unregistered_parcel(cert_on(date(2026, 2, 1), producer=producer), exporter_register())
    assert refusal is not None and refusal.code == "UNREGISTERED_PRODUCER"
    assert "parcels[0].producer_id" in refusal.sentence


def test_a_declaration_for_a_half_year_with_a_valid_day_passes() -> None:
    register = exporter_register()
    register.revoke(Revocation("BW", "BW-MINE-1", date(2026, 1, 2), "closed"))
    assert unregistered_declaration("BW", "BW-MINE-1", "2026-H1", register) is None
    refusal = unregistered_declaration("BW", "BW-MINE-1", "2026-H2", register)
    assert refusal is not None and refusal.code == "UNREGISTERED_PRODUCER"


def test_record_mode_refuses_nothing_enforce_mode_refuses() -> None:
    cert = cert_on(date(2026, 2, 1), "EXP-999")
    assert certificate_refusal(cert, exporter_register(), "record") is None
    refusal = certificate_refusal(cert, exporter_register(), "enforce")
    assert refusal is not None and refusal.code == "UNLICENSED_EXPORTER"
    assert declaration_refusal("BW", "BW-X-9", "2026-H1", Register(), "record") is None
    assert declaration_refusal("BW", "BW-X-9", "2026-H1", Register(), "enforce") is not None


def test_an_id_must_start_with_the_members_code() -> None:
    refusal = check_entry(entry("ZA-MINE-1"), producer="BW", members={"BW", "ZA"})
    assert refusal is not None and refusal.code == "SCHEMA_INVALID"
    assert check_entry(entry(), producer="BW", members={"BW"}) is None


def test_a_partner_keeps_no_register_here() -> None:
    refusal = check_entry(replace(entry(), member="AE"), producer="AE", members={"BW"})
    assert refusal is not None and refusal.code == "NOT_ALLOWED"


def test_an_id_cannot_change_kind_and_an_unknown_id_cannot_be_revoked() -> None:
    register = exporter_register()
    refusal = renewal_refusal(entry(kind=EntryKind.DEALER), register)
    assert refusal is not None and refusal.code == "NOT_ALLOWED"
    refusal = revocation_refusal(Revocation("BW", "BW-NONE", REVOKED, "x"), register)
    assert refusal is not None and refusal.code == "NOT_ALLOWED"


def test_a_register_operation_parses_with_its_optional_fields() -> None:
    parsed = RegisterEntry.from_json(
        {"kind": "ARTISANAL_COOPERATIVE", "id": "CD-COOP-7", "name": "Tshikapa diggers",
         "licence_no": "AC-7", "valid_from": "2026-01-01", "valid_until": None,
         "zone": "Kasai compliant zone", "members": 340},
        member="CD",
    )  # fmt: skip
    assert parsed.kind is EntryKind.ARTISANAL_COOPERATIVE and parsed.members == 340
    assert parsed.valid_until is None and parsed.zone == "Kasai compliant zone"
    with pytest.raises(Refusal, match=r"entry\.kind"):
        RegisterEntry.from_json({"kind": "SHOP", "id": "CD-1"}, member="CD")


def test_register_events_round_trip_through_their_schemas() -> None:
    store = default_store()
    for payload in (entry(zone="Orapa", members=3), Revocation("BW", "BW-EXP-1", REVOKED, "x")):
        name, record = store.decode(store.encode(payload.EVENT_TYPE, payload.to_record()))
        assert PAYLOAD_TYPES[name].from_record(record) == payload


def test_the_region_file_defaults_to_record_and_refuses_another_mode() -> None:
    base = {
        "region": {"code": "XS", "name": "x"},
        "members": {"BW": {"name": "B", "authority": "a"}},
    }
    assert parse_region(base).policy.registers == "record"
    assert parse_region({**base, "policy": {"registers": "enforce"}}).policy.registers == "enforce"
    with pytest.raises(ConfigError, match=r"policy\.registers"):
        parse_region({**base, "policy": {"registers": "strict"}})


@pytest.mark.parametrize(
    ("exported", "exceeded"), [("1005.00", False), ("1005.01", True), ("999.99", False)]
)
def test_producer_tolerance_just_inside_and_just_outside(exported: str, exceeded: bool) -> None:
    # 1000 ct declared, 0.5 % carats tolerance: 1005.00 passes, one cent more fails.
    [balance] = supply_balances(
        [SupplyPeriod("2026-H1", Decimal("1000.00"), Decimal(exported))], True
    )
    assert producer_exceeded(balance, Decimal("0.5")) is exceeded


def test_producer_stock_carries_over_as_for_the_member_rule() -> None:
    periods = [
        SupplyPeriod("2025-H2", Decimal("500.00"), Decimal("100.00")),
        SupplyPeriod("2026-H1", Decimal("100.00"), Decimal("500.00")),
    ]
    _, second = supply_balances(periods, True)
    assert second.carried_in == Decimal("400.00") and not producer_exceeded(second, Decimal("0"))
    _, no_carry = supply_balances(periods, False)
    assert producer_exceeded(no_carry, Decimal("0"))


def test_a_parcel_certificate_keeps_its_producer_through_json_and_avro() -> None:
    cert = cert_on(date(2026, 2, 1), producer="BW-MINE-1")
    assert cert.parcels[0].producer_id == "BW-MINE-1"
    store = default_store()
    _, record = store.decode(store.encode("CertificateIssued", {"certificate": cert.to_record()}))
    assert record["certificate"]["parcels"][0]["producer_id"] == "BW-MINE-1"
    assert parcel(1, "1.00", "1.00").producer_id is None
