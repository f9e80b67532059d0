"""Edges of every reconciliation rule, on the pure functions (the SQL is tested at the same
edges in test_reconciler_integration.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

from exchange.domain.discrepancy import (
    CertificateFacts,
    ConfirmationFacts,
    Flow,
    Limits,
    certificate_findings,
    confirmed_by_destination,
    gap_finding,
    gap_overdue,
    mirror_differences,
    mirror_finding,
    period_closed,
    unconfirmed_expired,
    unknown_certificate,
    within_pct,
)
from exchange.domain.kpstats import Period
from exchange.domain.region import Policy
from exchange.domain.supply import SupplyPeriod, supply_balances
from exchange.domain.valuation import Spread, is_outlier, log_price, robust_z, spread

LIMITS = Limits()
MEMBERS = frozenset({"BW", "ZA"})
EXPIRY = date(2026, 3, 31)


def cert(**kw: object) -> CertificateFacts:
    base: dict[str, object] = dict(
        certificate_id="XS-BW-2026-0000001-03", exporter="BW", destination="EU",
        date_of_expiry=EXPIRY, number_of_parcels=2, total_carats=D("100.00"),
        total_value_usd=D("1000.00"),
    )  # fmt: skip
    base.update(kw)
    return CertificateFacts(**base)  # type: ignore[arg-type]


def conf(event_id: str = "e1", **kw: object) -> ConfirmationFacts:
    base: dict[str, object] = dict(
        event_id=event_id, certificate_id="XS-BW-2026-0000001-03", issuing_participant="XS",
        importing_participant="EU", received_on=date(2026, 3, 1), parcels=2,
        carats=D("100.00"), value_usd=D("1000.00"), seal_intact=True,
    )  # fmt: skip
    base.update(kw)
    return ConfirmationFacts(**base)  # type: ignore[arg-type]


def kinds(c: CertificateFacts | None, *confs: ConfirmationFacts) -> set[str]:
    return {d.kind for d in certificate_findings(c, confs, LIMITS, "XS", MEMBERS)}


def test_limits_come_from_the_region_policy() -> None:
    assert Limits.from_policy(Policy()) == Limits()


def test_carats_exactly_at_the_tolerance_pass_and_one_cent_over_fails() -> None:
    assert within_pct(D("100.00"), D("100.50"), D("0.5"))
    assert within_pct(D("100.00"), D("99.50"), D("0.5"))
    assert not within_pct(D("100.00"), D("100.51"), D("0.5"))
    assert kinds(cert(), conf(carats=D("100.50"))) == set()
    assert kinds(cert(), conf(carats=D("99.49"))) == {"CARAT_MISMATCH"}


def test_value_exactly_at_the_tolerance_passes_and_one_cent_over_fails() -> None:
    assert kinds(cert(), conf(value_usd=D("1020.00"))) == set()
    assert kinds(cert(), conf(value_usd=D("1020.01"))) == {"VALUE_MISMATCH"}


def test_any_parcel_difference_is_a_mismatch_at_zero_tolerance() -> None:
    assert kinds(cert(), conf(parcels=3)) == {"PARCEL_MISMATCH"}


def test_a_clean_confirmation_raises_nothing() -> None:
    assert kinds(cert(), conf()) == set()


def test_confirmation_on_the_day_of_expiry_passes_and_the_day_after_fails() -> None:
    assert kinds(cert(), conf(received_on=EXPIRY)) == set()
    found = certificate_findings(cert(), [conf(received_on=EXPIRY + timedelta(days=1))],
                                 LIMITS, "XS", MEMBERS)  # fmt: skip
    assert [d.kind for d in found] == ["IMPORTED_AFTER_EXPIRY"]
    assert "1 day(s) later" in found[0].detail


def test_confirmation_by_another_participant_is_wrong_destination() -> None:
    assert kinds(cert(), conf(importing_participant="AE")) == {"WRONG_DESTINATION"}


def test_a_member_may_confirm_a_certificate_destined_to_the_region() -> None:
    assert kinds(cert(destination="XS"), conf(importing_participant="ZA")) == set()


def test_second_confirmation_is_a_duplicate_import_naming_both() -> None:
    found = certificate_findings(cert(), [conf("e1"), conf("e2", received_on=date(2026, 3, 5))],
                                 LIMITS, "XS", MEMBERS)  # fmt: skip
    assert [d.kind for d in found] == ["DUPLICATE_IMPORT"]
    assert "confirmed 2 times" in found[0].detail


def test_broken_seal_is_raised_even_before_the_certificate_arrives() -> None:
    found = certificate_findings(None, [conf(seal_intact=False)], LIMITS, "XS", MEMBERS)
    assert [d.kind for d in found] == ["SEAL_BROKEN"]
    assert found[0].participants == ("XS", "EU")


def test_rules_needing_the_certificate_wait_for_it() -> None:
    assert kinds(None, conf(carats=D("1.00"), importing_participant="AE")) == set()


def test_import_of_a_voided_or_replaced_certificate() -> None:
    voided = cert(voided_on=date(2026, 2, 1), replaced_by="XS-BW-2026-0000002-71")
    found = certificate_findings(voided, [conf()], LIMITS, "XS", MEMBERS)
    assert [d.kind for d in found] == ["VOIDED_BUT_IMPORTED"]
    assert "replaced by XS-BW-2026-0000002-71" in found[0].detail


def test_findings_name_the_exporter_destination_and_importers_once() -> None:
    found = certificate_findings(cert(), [conf(importing_participant="AE")], LIMITS, "XS", MEMBERS)
    assert found[0].participants == ("BW", "EU", "AE")
    assert found[0].dedup_key == "WRONG_DESTINATION:XS-BW-2026-0000001-03"


def test_unconfirmed_on_expiry_plus_grace_passes_and_the_day_after_fails() -> None:
    last = EXPIRY + timedelta(days=30)
    assert not unconfirmed_expired(EXPIRY, 30, last, confirmed=False, voided=False)
    assert unconfirmed_expired(EXPIRY, 30, last + timedelta(days=1), confirmed=False, voided=False)
    assert not unconfirmed_expired(EXPIRY, 30, date(2027, 1, 1), confirmed=True, voided=False)
    assert not unconfirmed_expired(EXPIRY, 30, date(2027, 1, 1), confirmed=False, voided=True)


def test_only_the_destination_or_a_member_for_the_region_confirms_against_expiry() -> None:
    assert confirmed_by_destination("EU", ["AE", "EU"], "XS", MEMBERS)
    assert not confirmed_by_destination("EU", ["AE", "BW"], "XS", MEMBERS)
    assert confirmed_by_destination("XS", ["BW"], "XS", MEMBERS)
    assert not confirmed_by_destination("XS", ["AE"], "XS", MEMBERS)
    assert not confirmed_by_destination("EU", [], "XS", MEMBERS)


def test_unknown_certificate_waits_the_grace_period_unless_rejected() -> None:
    received = date(2026, 3, 1)
    last = received + timedelta(days=30)
    assert not unknown_certificate(received, 30, last, accepted=False, rejected=False)
    assert unknown_certificate(
        received, 30, last + timedelta(days=1), accepted=False, rejected=False
    )
    assert unknown_certificate(received, 30, received, accepted=False, rejected=True)
    assert not unknown_certificate(received, 30, date(2027, 1, 1), accepted=True, rejected=False)


def test_gap_exactly_at_the_timeout_is_not_overdue_and_one_second_older_is() -> None:
    as_of = date(2026, 4, 10)
    edge = datetime(2026, 4, 10, 0, 0, tzinfo=UTC)  # end of 10 April minus 24 h
    assert not gap_overdue(edge, as_of, 24)
    assert gap_overdue(edge - timedelta(seconds=1), as_of, 24)


def test_gap_finding_groups_a_range_under_one_key() -> None:
    d = gap_finding("BW", 5, 7, datetime(2026, 4, 1, tzinfo=UTC), 24)
    assert d.dedup_key == "SEQUENCE_GAP:BW::BW#5-7"
    assert "5-7 (3 missing)" in d.detail and d.participants == ("BW",)


def test_robust_z_uses_the_scaled_mad() -> None:
    s = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s == Spread(3.0, 1.0, 5)
    assert robust_z(3.0 + 3.5 / 0.6745, s) == 3.5
    assert robust_z(1.0, Spread(1.0, 0.0, 40)) is None


def test_outlier_needs_the_minimum_sample_and_a_z_beyond_k() -> None:
    s = Spread(0.0, 1.0, 30)
    beyond, at = 3.6 / 0.6745, 3.5 / 0.6745
    assert is_outlier(beyond, s, 3.5, 30)
    assert not is_outlier(at * 0.999, s, 3.5, 30)
    assert not is_outlier(beyond, Spread(0.0, 1.0, 29), 3.5, 30)
    assert not is_outlier(beyond, Spread(0.0, 0.0, 30), 3.5, 30)


def test_log_price_is_the_natural_log_of_usd_per_carat() -> None:
    assert abs(log_price(D("700.00"), D("100.00")) - 1.9459101) < 1e-6


def test_exports_equal_to_production_plus_stock_pass_and_one_cent_more_fails() -> None:
    periods = [
        SupplyPeriod("2026-H1", D("100.00"), D("60.00")),
        SupplyPeriod("2026-H2", D("10.00"), D("50.00")),
    ]
    balances = supply_balances(periods, carry_over=True)
    assert balances[1].carried_in == D("40.00") and not balances[1].exceeded
    more = [periods[0], SupplyPeriod("2026-H2", D("10.00"), D("50.01"))]
    assert supply_balances(more, carry_over=True)[1].exceeded
    assert supply_balances(periods, carry_over=False)[1].exceeded


def test_an_excess_does_not_prepay_the_next_period() -> None:
    periods = [
        SupplyPeriod("2025-H2", D("0.00"), D("10.00")),
        SupplyPeriod("2026-H1", D("5.00"), D("5.00")),
    ]
    balances = supply_balances(periods, carry_over=True)
    assert balances[0].exceeded and balances[1].carried_in == D("0.00")
    assert not balances[1].exceeded


def test_mirror_exactly_at_the_tolerance_passes_and_one_cent_over_fails() -> None:
    exported = Flow(D("100.00"), D("1000.00"), 20)
    assert mirror_differences(exported, Flow(D("95.00"), D("950.00"), 19), D("5")) == []
    over = mirror_differences(exported, Flow(D("94.99"), D("950.00"), 19), D("5"))
    assert over == ["carats"]
    assert mirror_finding("BW", "EU", "2026-Q1", exported, exported, D("5")) is None
    missing = mirror_finding("BW", "EU", "2026-Q1", exported, Flow(D(0), D(0), 0), D("5"))
    assert missing is not None and missing.dedup_key == "MIRROR_MISMATCH:BW>EU:2026-Q1"


def test_a_period_is_closed_the_day_after_its_end_plus_grace() -> None:
    q1 = Period.parse("2026-Q1")
    assert not period_closed(q1, 30, date(2026, 4, 30))
    assert period_closed(q1, 30, date(2026, 5, 1))
