"""The DESIGN §7 business rules: each reason code, its edges, and the order of checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.certificate import (
    Certificate,
    CertificateDraft,
    Container,
    HsCode,
    Origin,
    OriginType,
    Parcel,
    Party,
    Scope,
    sum_of,
)
from exchange.domain.certnumber import regional_number
from exchange.domain.events import ImportConfirmation, ProductionDeclaration, Voiding
from exchange.domain.region import Policy
from exchange.domain.rules import (
    check_certificate,
    check_dates,
    check_duplicate,
    check_import,
    check_production,
    check_totals,
    check_void,
    check_void_against,
    issued_by,
)
from exchange.errors import Refusal

MEMBERS = ("BW", "ZA")
BOOK = {
    "XS": "ADMITTED",
    "BW": "ADMITTED",
    "ZA": "ADMITTED",
    "AE": "ADMITTED",
    "RU": "ADMITTED",
    "CG": "REINSTATED",
    "CF": "SUSPENDED",
    "VE": "WITHDRAWN",
}
POLICY = Policy()  # max_validity_days 60
ISSUED = date(2026, 1, 15)
NUMBER = "XS-BW-2026-0000001-03"


def parcel(no: int, carats: str, value: str, origin: str | None = "BW") -> Parcel:
    return Parcel(no, HsCode.HS_7102_31, Decimal(carats), Decimal(value), origin)


def certificate(**changes: Any) -> Certificate:
    """A valid certificate of member BW to the partner AE."""
    parcels = (parcel(1, "100.50", "20000.00"), parcel(2, "49.50", "500.00"))
    cert = Certificate(
        certificate_id=NUMBER,
        issuing_participant="XS",
        issuing_member="BW",
        issuing_authority="Ministry of Minerals and Energy",
        destination="AE",
        origin=Origin(OriginType.UNMIXED, ("BW",)),
        exporter=Party("Okavango", "Gaborone", "BW", "E1"),
        importer=Party("Hub Trading", "Dubai", "AE", "I9"),
        date_of_issue=ISSUED,
        date_of_expiry=ISSUED + timedelta(days=45),
        parcels=parcels,
        number_of_parcels=2,
        total_carats=Decimal("150.00"),
        total_value_usd=Decimal("20500.00"),
        container=Container("C-1", ("S-1",)),
        lawful_import_evidence=(),
        scope=Scope.EXTERNAL,
    )
    return replace(cert, **changes)


def partner_certificate(**changes: Any) -> Certificate:
    """A valid certificate of the partner AE into member BW."""
    base = certificate(
        certificate_id="AE-2026/0017",
        issuing_participant="AE",
        issuing_member=None,
        destination="BW",
        origin=Origin(OriginType.MIXED, ()),
        parcels=(parcel(1, "100.50", "20000.00", None), parcel(2, "49.50", "500.00", None)),
    )
    return replace(base, **changes)


def check(cert: Certificate | CertificateDraft, producer: str = "BW") -> Refusal | None:
    return check_certificate(cert, producer, BOOK, POLICY, region_code="XS", members=MEMBERS)


def code_of(cert: Certificate, producer: str = "BW") -> str | None:
    refusal = check(cert, producer)
    return None if refusal is None else refusal.code


# --- valid certificates --------------------------------------------------------------------


def test_a_valid_member_certificate_passes() -> None:
    assert check(certificate()) is None


def test_a_valid_intra_regional_certificate_passes() -> None:
    assert check(certificate(destination="ZA", scope=Scope.INTRA_REGIONAL)) is None


def test_a_valid_partner_certificate_into_the_region_passes() -> None:
    assert check(partner_certificate(), producer="AE") is None


def test_a_draft_without_a_number_passes_before_allocation() -> None:
    cert = certificate()
    fields = {name: getattr(cert, name) for name in cert.__dataclass_fields__}
    fields["certificate_id"] = None
    assert check(CertificateDraft(**fields)) is None


def test_a_reinstated_participant_is_in_good_standing() -> None:
    assert check(certificate(destination="CG")) is None


# --- ISSUER_MISMATCH -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "producer"),
    [
        ({"issuing_participant": "BW"}, "BW"),
        ({"issuing_member": "ZA"}, "BW"),
        ({}, "ZA"),
        ({"issuing_member": None, "issuing_participant": "BW"}, "BW"),
    ],
)
def test_a_member_certificate_from_another_issuer_is_an_issuer_mismatch(
    changes: dict[str, Any], producer: str
) -> None:
    assert code_of(certificate(**changes), producer) == "ISSUER_MISMATCH"


def test_a_partner_certificate_naming_a_member_is_an_issuer_mismatch() -> None:
    refusal = check(partner_certificate(issuing_member="BW"), producer="AE")
    assert refusal is not None and refusal.code == "ISSUER_MISMATCH"
    assert "issuing_member is BW" in refusal.sentence


def test_a_partner_certificate_published_by_another_partner_is_an_issuer_mismatch() -> None:
    assert code_of(partner_certificate(), producer="IN") == "ISSUER_MISMATCH"


# --- BAD_CERTIFICATE_NUMBER ----------------------------------------------------------------


def test_a_number_with_wrong_check_digits_is_a_bad_number() -> None:
    assert code_of(certificate(certificate_id="XS-BW-2026-0000001-04")) == "BAD_CERTIFICATE_NUMBER"


def test_a_well_formed_number_of_another_member_is_a_bad_number() -> None:
    refusal = check(certificate(certificate_id=regional_number("XS", "ZA", 2026, 1)))
    assert refusal is not None and refusal.code == "BAD_CERTIFICATE_NUMBER"
    assert "names member ZA but issuing_member is BW" in refusal.sentence


def test_a_number_of_another_year_than_the_issue_date_is_a_bad_number() -> None:
    refusal = check(certificate(certificate_id=regional_number("XS", "BW", 2025, 9)))
    assert refusal is not None and refusal.code == "BAD_CERTIFICATE_NUMBER"
    assert "year 2025" in refusal.sentence


def test_a_partner_number_not_starting_with_its_code_is_a_bad_number() -> None:
    assert code_of(partner_certificate(certificate_id="IN-17"), "AE") == "BAD_CERTIFICATE_NUMBER"


# --- NOT_A_PARTICIPANT, PARTICIPANT_SUSPENDED, NOT_ALLOWED ---------------------------------


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"destination": "SO"}, "NOT_A_PARTICIPANT"),
        ({"destination": "VE"}, "NOT_A_PARTICIPANT"),
        ({"destination": "CF"}, "PARTICIPANT_SUSPENDED"),
        ({"origin": Origin(OriginType.UNMIXED, ("SO",))}, "NOT_A_PARTICIPANT"),
        ({"origin": Origin(OriginType.MIXED, ("BW", "CF"))}, "PARTICIPANT_SUSPENDED"),
        (
            {"parcels": (parcel(1, "100.50", "20000.00", "SO"), parcel(2, "49.50", "500.00"))},
            "NOT_A_PARTICIPANT",
        ),
        ({"destination": "ZA"}, "NOT_A_PARTICIPANT"),
        ({"scope": Scope.INTRA_REGIONAL}, "NOT_A_PARTICIPANT"),
        ({"destination": "BW"}, "NOT_ALLOWED"),
        ({"destination": "XS"}, "NOT_ALLOWED"),
    ],
)
def test_destination_origin_and_scope_rules_give_their_code(
    changes: dict[str, Any], code: str
) -> None:
    assert code_of(certificate(**changes)) == code


def test_an_external_certificate_to_a_member_says_the_scope_must_be_intra_regional() -> None:
    refusal = check(certificate(destination="ZA"))
    assert refusal is not None
    assert refusal.sentence == (
        "destination ZA is a member of XS, not a KP participant of its own: "
        "scope must be INTRA_REGIONAL, got EXTERNAL"
    )


def test_a_suspended_origin_is_refused_naming_the_field_and_code() -> None:
    refusal = check(certificate(origin=Origin(OriginType.MIXED, ("BW", "CF"))))
    assert refusal is not None
    assert refusal.sentence == "origin.countries[1] CF is a suspended KP participant"


def test_a_partner_certificate_leaving_the_region_is_not_allowed() -> None:
    assert code_of(partner_certificate(destination="RU"), "AE") == "NOT_ALLOWED"


def test_a_partner_certificate_declared_intra_regional_is_refused() -> None:
    cert = partner_certificate(scope=Scope.INTRA_REGIONAL)
    assert code_of(cert, "AE") == "NOT_A_PARTICIPANT"


def test_an_unmixed_origin_with_two_countries_is_schema_invalid() -> None:
    assert code_of(certificate(origin=Origin(OriginType.UNMIXED, ("BW", "ZA")))) == "SCHEMA_INVALID"


# --- INVALID_HS_CODE, NON_POSITIVE_QUANTITY ------------------------------------------------


def test_an_unknown_hs_code_is_invalid() -> None:
    parcels = (
        replace(parcel(1, "100.50", "20000.00"), hs_code=HsCode.UNKNOWN),
        parcel(2, "49.50", "500.00"),
    )
    assert code_of(certificate(parcels=parcels)) == "INVALID_HS_CODE"


@pytest.mark.parametrize(
    "changes",
    [
        {"number_of_parcels": 0},
        {"total_carats": Decimal("0.00")},
        {"total_value_usd": Decimal("-1.00")},
        {"parcels": (parcel(1, "0.00", "20000.00"), parcel(2, "150.00", "500.00"))},
        {"parcels": (parcel(1, "100.50", "-1.00"), parcel(2, "49.50", "20501.00"))},
        {"parcels": (parcel(0, "100.50", "20000.00"), parcel(2, "49.50", "500.00"))},
    ],
)
def test_a_quantity_of_zero_or_less_is_refused(changes: dict[str, Any]) -> None:
    assert code_of(certificate(**changes)) == "NON_POSITIVE_QUANTITY"


# --- TOTALS_MISMATCH -----------------------------------------------------------------------


def test_totals_exactly_equal_to_the_parcel_sums_pass() -> None:
    assert check_totals(certificate()) is None


def test_total_carats_one_cent_off_is_a_totals_mismatch() -> None:
    refusal = check_totals(certificate(total_carats=Decimal("150.01")))
    assert refusal is not None and refusal.code == "TOTALS_MISMATCH"
    assert refusal.sentence == "total_carats is 150.01 but the parcels add up to 150.00"


def test_total_value_one_cent_off_is_a_totals_mismatch() -> None:
    refusal = check_totals(certificate(total_value_usd=Decimal("20499.99")))
    assert refusal is not None
    assert refusal.sentence == "total_value_usd is 20499.99 but the parcels add up to 20500.00"


def test_a_parcel_count_unlike_the_parcels_is_a_totals_mismatch() -> None:
    refusal = check_totals(certificate(number_of_parcels=3))
    assert refusal is not None
    assert refusal.sentence == "number_of_parcels is 3 but 2 parcels are listed"


def test_a_parcel_number_used_twice_is_a_totals_mismatch() -> None:
    parcels = (parcel(1, "100.50", "20000.00"), parcel(1, "49.50", "500.00"))
    assert code_of(certificate(parcels=parcels)) == "TOTALS_MISMATCH"


amounts = st.decimals("0.01", "100000", places=2)


@given(st.lists(st.tuples(amounts, amounts), min_size=1, max_size=8), st.integers(-500, 500))
def test_totals_pass_exactly_when_they_equal_the_sums(
    split: list[tuple[Decimal, Decimal]], cents_off: int
) -> None:
    parcels = tuple(parcel(i + 1, str(c), str(v)) for i, (c, v) in enumerate(split))
    total = sum_of(p.carats for p in parcels) + Decimal(cents_off) / 100
    cert = certificate(
        parcels=parcels,
        number_of_parcels=len(parcels),
        total_carats=total,
        total_value_usd=sum_of(p.value_usd for p in parcels),
    )
    assert (check_totals(cert) is None) == (cents_off == 0)


# --- INVALID_DATES -------------------------------------------------------------------------


def test_validity_of_exactly_the_maximum_passes() -> None:
    cert = certificate(date_of_expiry=ISSUED + timedelta(days=60))
    assert check_dates(cert, 60) is None


def test_validity_one_day_over_the_maximum_is_invalid() -> None:
    refusal = check_dates(certificate(date_of_expiry=ISSUED + timedelta(days=61)), 60)
    assert refusal is not None and refusal.code == "INVALID_DATES"
    assert "is 61 days after date_of_issue 2026-01-15; the region allows at most 60" in (
        refusal.sentence
    )


@pytest.mark.parametrize("days", [0, -1])
def test_expiry_on_or_before_the_issue_date_is_invalid(days: int) -> None:
    refusal = check_dates(certificate(date_of_expiry=ISSUED + timedelta(days=days)), 60)
    assert refusal is not None and refusal.code == "INVALID_DATES"


def test_check_certificate_uses_the_policys_maximum() -> None:
    cert = certificate(date_of_expiry=ISSUED + timedelta(days=61))
    assert code_of(cert) == "INVALID_DATES"


# --- order -------------------------------------------------------------------------------


def test_the_issuer_is_checked_before_the_contents() -> None:
    cert = certificate(issuing_member="ZA", total_carats=Decimal("1.00"))
    assert code_of(cert) == "ISSUER_MISMATCH"


def test_quantities_are_checked_before_totals_and_totals_before_dates() -> None:
    assert code_of(certificate(total_carats=Decimal("0.00"))) == "NON_POSITIVE_QUANTITY"
    late = ISSUED + timedelta(days=90)
    assert code_of(certificate(total_carats=Decimal("1.00"), date_of_expiry=late)) == (
        "TOTALS_MISMATCH"
    )


# --- registry state: DUPLICATE_CERTIFICATE, UNKNOWN_CERTIFICATE, NOT_ALLOWED ---------------


def test_a_new_number_is_no_duplicate() -> None:
    assert check_duplicate(None, certificate()) is None


def test_the_same_content_again_is_no_duplicate_refusal() -> None:
    assert check_duplicate(certificate(), certificate()) is None


def test_the_same_number_with_other_content_is_a_duplicate_naming_the_field() -> None:
    refusal = check_duplicate(certificate(), certificate(destination="RU"))
    assert refusal is not None and refusal.code == "DUPLICATE_CERTIFICATE"
    assert "different destination (AE, now RU)" in refusal.sentence


def test_issued_by_knows_members_and_partners() -> None:
    assert issued_by(certificate(), "BW") and not issued_by(certificate(), "ZA")
    assert issued_by(partner_certificate(), "AE")


@pytest.mark.parametrize(
    ("state", "matches", "code"),
    [
        (None, True, "UNKNOWN_CERTIFICATE"),
        ("ISSUED", False, "UNKNOWN_CERTIFICATE"),
        ("VOIDED", True, "NOT_ALLOWED"),
        ("REPLACED", True, "NOT_ALLOWED"),
        ("IMPORT_CONFIRMED", True, "NOT_ALLOWED"),
    ],
)
def test_a_void_is_refused_by_the_stored_state(state: str | None, matches: bool, code: str) -> None:
    refusal = check_void_against(NUMBER, state, matches)
    assert refusal is not None and refusal.code == code


def test_an_issued_certificate_may_be_voided_by_its_issuer() -> None:
    assert check_void_against(NUMBER, "ISSUED", True) is None


def void_code(voiding: Voiding, producer: str = "BW", state: str | None = "ISSUED") -> str | None:
    refusal = check_void(
        voiding,
        producer,
        region_code="XS",
        members=MEMBERS,
        existing_state=state,
        issuer_matches=True,
    )
    return None if refusal is None else refusal.code


VOIDING = Voiding(NUMBER, "XS", date(2026, 1, 20), "typo in the importer", None)


def test_a_valid_void_passes() -> None:
    assert void_code(VOIDING) is None


@pytest.mark.parametrize(
    ("voiding", "producer", "code"),
    [
        (replace(VOIDING, issuing_participant="BW"), "BW", "ISSUER_MISMATCH"),
        (VOIDING, "AE", "ISSUER_MISMATCH"),
        (replace(VOIDING, certificate_id="XS-BW-2026-0000001-30"), "BW", "BAD_CERTIFICATE_NUMBER"),
        (replace(VOIDING, replaced_by="XS-BW-2026-0000002-99"), "BW", "BAD_CERTIFICATE_NUMBER"),
        (replace(VOIDING, replaced_by=NUMBER), "BW", "NOT_ALLOWED"),
    ],
)
def test_a_void_is_refused_for_its_content(voiding: Voiding, producer: str, code: str) -> None:
    assert void_code(voiding, producer) == code


def test_a_void_after_import_is_not_allowed() -> None:
    assert void_code(VOIDING, state="IMPORT_CONFIRMED") == "NOT_ALLOWED"


# --- import confirmations and production ---------------------------------------------------

CONFIRMATION = ImportConfirmation(
    NUMBER, "XS", "AE", date(2026, 2, 1), 2, Decimal("150.00"), Decimal("20500.00"), True, ""
)


def import_code(confirmation: ImportConfirmation, producer: str = "AE") -> str | None:
    refusal = check_import(confirmation, producer, BOOK, region_code="XS")
    return None if refusal is None else refusal.code


def test_a_valid_import_confirmation_passes() -> None:
    assert import_code(CONFIRMATION) is None


@pytest.mark.parametrize(
    ("confirmation", "code"),
    [
        (replace(CONFIRMATION, importing_participant="ZA"), "ISSUER_MISMATCH"),
        (replace(CONFIRMATION, certificate_id="XS-BW-2026-0000010-03"), "BAD_CERTIFICATE_NUMBER"),
        (
            replace(CONFIRMATION, issuing_participant="SO", certificate_id="SO-1"),
            "NOT_A_PARTICIPANT",
        ),
        (
            replace(CONFIRMATION, issuing_participant="CF", certificate_id="CF-1"),
            "PARTICIPANT_SUSPENDED",
        ),
        (
            replace(CONFIRMATION, issuing_participant="RU", certificate_id="XS-1"),
            "BAD_CERTIFICATE_NUMBER",
        ),
        (replace(CONFIRMATION, carats=Decimal("0.00")), "NON_POSITIVE_QUANTITY"),
        (replace(CONFIRMATION, parcels=0), "NON_POSITIVE_QUANTITY"),
    ],
)
def test_an_import_confirmation_is_refused_for_what_the_importer_can_fix(
    confirmation: ImportConfirmation, code: str
) -> None:
    assert import_code(confirmation) == code


def test_an_import_of_a_foreign_certificate_passes() -> None:
    assert (
        import_code(replace(CONFIRMATION, issuing_participant="RU", certificate_id="RU-77")) is None
    )


DECLARATION = ProductionDeclaration("BW", "2026-H1", "BW-MINE-7", Decimal("10.00"), Decimal("9.00"))


@pytest.mark.parametrize(
    ("declaration", "producer", "code"),
    [
        (DECLARATION, "BW", None),
        (DECLARATION, "ZA", "ISSUER_MISMATCH"),
        (replace(DECLARATION, participant="AE"), "AE", "ISSUER_MISMATCH"),
        (replace(DECLARATION, period="2026-Q1"), "BW", "SCHEMA_INVALID"),
        (replace(DECLARATION, carats=Decimal("0.00")), "BW", "NON_POSITIVE_QUANTITY"),
        (replace(DECLARATION, value_usd=Decimal("-5.00")), "BW", "NON_POSITIVE_QUANTITY"),
    ],
)
def test_a_production_declaration_is_checked_for_declarer_period_and_quantities(
    declaration: ProductionDeclaration, producer: str, code: str | None
) -> None:
    refusal = check_production(declaration, producer, members=MEMBERS)
    assert (None if refusal is None else refusal.code) == code
