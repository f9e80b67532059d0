"""The business rules of DESIGN §7 as pure functions: each returns a Refusal or None.

Nodes (before they commit an operation) and the registry (before it accepts an event) call the
same functions, so a certificate a node let through is not rejected by the registry for a
reason the node could have seen. Everything a rule needs is an argument: the participant
``book`` (code -> status, built by the caller from the region file and the registry's status
history; it holds the region code and the members too, as ``Region.book()`` does), the
region code and member codes, the policy, and — for the rules that need stored state — that
state. A Refusal is *returned*, not raised, so a caller can collect or count.

Decisions taken here (the contract leaves them open):

- Destination and scope. A region member is not a KP participant of its own (the region is,
  as the EU is for its member states), so an EXTERNAL certificate naming a member, or an
  INTRA_REGIONAL one naming a non-member, is NOT_A_PARTICIPANT *in the declared scope*. A
  partner's certificate is EXTERNAL by nature and must name a member: the exchange carries
  partners' certificates only into the region (NOT_ALLOWED otherwise), so that a node exists
  to confirm it. A certificate naming its own issuer is NOT_ALLOWED.
- Participants checked: the destination, the origin countries and each parcel's origin.
  Exporter and importer countries are not: a firm's country need not be a participant of its
  own (a Belgian importer trades under the EU).
- Standing: ADMITTED and REINSTATED are in good standing; SUSPENDED is PARTICIPANT_SUSPENDED;
  WITHDRAWN, any other status, or no entry is NOT_A_PARTICIPANT.
- An UNMIXED origin must name exactly one country (SCHEMA_INVALID otherwise).
- Import confirmations are refused only for what the importing authority can fix (its own
  identity, a mistyped number, non-positive quantities, an issuer that is no participant in
  good standing); everything that compares them with the certificate is reconciliation.
- Member isolation (DESIGN §15): a confirmation changes a certificate's state only when it
  comes from the certificate's destination (:func:`is_destination`). Anyone else's is a fact
  recorded for the reconciler (WRONG_DESTINATION), never a change to another member's
  certificate, so it can neither block the issuer's void nor make ``verify`` answer "valid".
- Blank text (issuing authority, exporter and importer fields, container id, seal numbers) and
  an empty seal list are SCHEMA_INVALID here, not only in the node's operation parser, so an
  event crafted past a node meets the checks the node would have made.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal

from exchange.domain.certificate import (
    Certificate,
    CertificateContent,
    CertificateDraft,
    HsCode,
    OriginType,
    Party,
    derived_scope,
    json_of,
    sum_of,
)
from exchange.domain.certnumber import check_foreign, parse_regional
from exchange.domain.codes import CertificateState
from exchange.domain.events import HALF_YEAR, ImportConfirmation, ProductionDeclaration, Voiding
from exchange.domain.region import Policy
from exchange.errors import Refusal

GOOD_STANDING = frozenset({"ADMITTED", "REINSTATED"})
# Plausible bounds. The KP scheme began in 2003, and no certificate or period runs into the
# next century; a year 0 or 9999 is an attack or a typing error, and it broke every later
# reconciliation ("year 0 is out of range"). The world mines about 120 million carats a year
# worth about 15 billion USD: one certificate, confirmation or declaration above 10^8 ct or
# 10^11 USD is no real figure, and such figures would swamp every statistic they enter.
EARLIEST_DAY, LATEST_DAY = date(2000, 1, 1), date(2099, 12, 31)
MAX_CARATS, MAX_VALUE_USD, MAX_PARCELS = Decimal(10**8), Decimal(10**11), 10_000
VOIDABLE_STATES = frozenset({CertificateState.ISSUED})
Book = Mapping[str, str]
AnyCertificate = Certificate | CertificateDraft


def standing(field: str, code: str, book: Book) -> Refusal | None:
    """NOT_A_PARTICIPANT or PARTICIPANT_SUSPENDED for ``code`` named in ``field``."""
    status = book.get(code)
    if status == "SUSPENDED":
        return Refusal("PARTICIPANT_SUSPENDED", f"{field} {code} is a suspended KP participant")
    if status not in GOOD_STANDING:
        why = "has withdrawn from the KP" if status == "WITHDRAWN" else "is no KP participant"
        return Refusal("NOT_A_PARTICIPANT", f"{field} {code} {why}")
    return None


def issued_by(cert: CertificateContent, producer: str) -> bool:
    """Whether ``producer`` (a member or a partner code) issued ``cert``."""
    return (cert.issuing_member or cert.issuing_participant) == producer


def check_issuer(
    cert: CertificateContent, producer: str, *, region_code: str, members: Collection[str]
) -> Refusal | None:
    """ISSUER_MISMATCH unless ``producer`` is the certificate's issuing member or partner."""
    if producer in members:
        if cert.issuing_participant != region_code:
            return Refusal(
                "ISSUER_MISMATCH",
                f"issuing_participant is {cert.issuing_participant} but member {producer} "
                f"issues certificates of the region {region_code}",
            )
        if cert.issuing_member != producer:
            return Refusal(
                "ISSUER_MISMATCH",
                f"issuing_member is {cert.issuing_member} but it comes from {producer}",
            )
    elif cert.issuing_participant != producer:
        return Refusal(
            "ISSUER_MISMATCH",
            f"issuing_participant is {cert.issuing_participant} but it comes from {producer}",
        )
    elif cert.issuing_member is not None:
        return Refusal(
            "ISSUER_MISMATCH",
            f"issuing_member is {cert.issuing_member} but partner {producer} has no members",
        )
    return None


def check_number(cert: AnyCertificate, *, region_code: str) -> Refusal | None:
    """BAD_CERTIFICATE_NUMBER: format and check digits, member and year (none if unnumbered)."""
    number = cert.certificate_id
    if number is None:
        return None  # the node allocates a well-formed number
    if cert.issuing_member is None:
        return check_foreign(number, cert.issuing_participant)
    try:
        parsed = parse_regional(number, region_code)
    except Refusal as refusal:
        return refusal
    if parsed.member != cert.issuing_member:
        return Refusal(
            "BAD_CERTIFICATE_NUMBER",
            f"certificate_id {number} names member {parsed.member} "
            f"but issuing_member is {cert.issuing_member}",
        )
    if parsed.year != cert.date_of_issue.year:
        return Refusal(
            "BAD_CERTIFICATE_NUMBER",
            f"certificate_id {number} has year {parsed.year} "
            f"but date_of_issue is {cert.date_of_issue.isoformat()}",
        )
    return None


def check_destination(
    cert: CertificateContent, book: Book, *, region_code: str, members: Collection[str]
) -> Refusal | None:
    """The destination's standing and its agreement with the scope (see the module notes)."""
    dest = cert.destination
    if dest in (cert.issuing_member, cert.issuing_participant):
        return Refusal("NOT_ALLOWED", f"destination {dest} is the certificate's own issuer")
    refusal = standing("destination", dest, book)
    if refusal is not None:
        return refusal
    if cert.issuing_member is None and dest not in members:
        return Refusal(
            "NOT_ALLOWED",
            f"destination {dest} is not a member of {region_code}: a partner's certificate "
            "is carried only for shipments into the region",
        )
    wanted = derived_scope(cert.issuing_member, dest, members)
    if cert.scope is wanted:
        return None
    if dest in members and cert.issuing_member:
        why = f"is a member of {region_code}, not a KP participant of its own"
    elif cert.issuing_member is None:
        why = f"is imported from {cert.issuing_participant}, which is not a member"
    else:
        why = f"is not a member of {region_code}"
    return Refusal(
        "NOT_A_PARTICIPANT",
        f"destination {dest} {why}: scope must be {wanted.value}, got {cert.scope.value}",
    )


def check_origins(cert: CertificateContent, book: Book) -> Refusal | None:
    """Every origin country (certificate and parcels) is a participant in good standing."""
    origin = cert.origin
    if origin.type is OriginType.UNKNOWN:
        return Refusal("SCHEMA_INVALID", "origin.type must be UNMIXED or MIXED")
    if origin.type is OriginType.UNMIXED and len(origin.countries) != 1:
        return Refusal(
            "SCHEMA_INVALID",
            f"origin.countries must name exactly one country for UNMIXED, "
            f"got {len(origin.countries)}",
        )
    named = [(f"origin.countries[{i}]", code) for i, code in enumerate(origin.countries)]
    named += [
        (f"parcels[{i}].origin_country", p.origin_country)
        for i, p in enumerate(cert.parcels)
        if p.origin_country is not None
    ]
    for field, code in named:
        refusal = standing(field, code, book)
        if refusal is not None:
            return refusal
    return None


def check_hs_codes(cert: CertificateContent) -> Refusal | None:
    """INVALID_HS_CODE for a parcel whose heading this version does not know."""
    for i, parcel in enumerate(cert.parcels):
        if parcel.hs_code is HsCode.UNKNOWN:
            return Refusal(
                "INVALID_HS_CODE",
                f"parcels[{i}].hs_code is not one of 7102.10, 7102.21, 7102.31",
            )
    return None


def check_quantities(cert: CertificateContent) -> Refusal | None:
    """NON_POSITIVE_QUANTITY for any count, weight or value of zero or less."""
    stated: list[tuple[str, int | Decimal]] = [
        ("number_of_parcels", cert.number_of_parcels),
        ("total_carats", cert.total_carats),
        ("total_value_usd", cert.total_value_usd),
    ]
    for i, p in enumerate(cert.parcels):
        stated += [
            (f"parcels[{i}].parcel_no", p.parcel_no),
            (f"parcels[{i}].carats", p.carats),
            (f"parcels[{i}].value_usd", p.value_usd),
        ]
    return check_magnitudes(stated)


def check_totals(cert: CertificateContent) -> Refusal | None:
    """TOTALS_MISMATCH: the stated count and sums against the parcels, unique parcel numbers."""
    if cert.number_of_parcels != len(cert.parcels):
        return Refusal(
            "TOTALS_MISMATCH",
            f"number_of_parcels is {cert.number_of_parcels} "
            f"but {len(cert.parcels)} parcels are listed",
        )
    seen: set[int] = set()
    for i, parcel in enumerate(cert.parcels):
        if parcel.parcel_no in seen:
            return Refusal(
                "TOTALS_MISMATCH", f"parcels[{i}].parcel_no {parcel.parcel_no} appears twice"
            )
        seen.add(parcel.parcel_no)
    for field, total, part in (
        ("total_carats", cert.total_carats, sum_of(p.carats for p in cert.parcels)),
        ("total_value_usd", cert.total_value_usd, sum_of(p.value_usd for p in cert.parcels)),
    ):
        if total != part:
            return Refusal(
                "TOTALS_MISMATCH",
                f"{field} is {json_of(total)} but the parcels add up to {json_of(part)}",
            )
    return None


def check_day(field: str, day: date) -> Refusal | None:
    """INVALID_DATES for a day outside the plausible range."""
    if EARLIEST_DAY <= day <= LATEST_DAY:
        return None
    return Refusal(
        "INVALID_DATES",
        f"{field} {day.isoformat()} is not between {EARLIEST_DAY.isoformat()} and "
        f"{LATEST_DAY.isoformat()}",
    )


def check_instant(field: str, instant: datetime) -> Refusal | None:
    """INVALID_DATES for an instant (an event's ``produced_at``) outside the plausible range."""
    return check_day(field, instant.date())


def check_magnitudes(stated: Collection[tuple[str, int | Decimal]]) -> Refusal | None:
    """NON_POSITIVE_QUANTITY for zero or less; SCHEMA_INVALID above the plausible bound of
    its kind (parcels, carats, USD, told apart by the field's name)."""
    for field, value in stated:
        if value <= 0:
            return Refusal(
                "NON_POSITIVE_QUANTITY", f"{field} is {json_of(value)}, must be more than 0"
            )
        bound: int | Decimal = MAX_PARCELS
        if "carats" in field:
            bound = MAX_CARATS
        elif "value" in field:
            bound = MAX_VALUE_USD
        if value > bound and not field.endswith("parcel_no"):
            return Refusal(
                "SCHEMA_INVALID",
                f"{field} is {json_of(value)}, above the plausible bound of {json_of(bound)}",
            )
    return None


def check_period(period: str) -> Refusal | None:
    """SCHEMA_INVALID unless ``period`` is a half-year of a plausible year."""
    if HALF_YEAR.fullmatch(period) and EARLIEST_DAY.year <= int(period[:4]) <= LATEST_DAY.year:
        return None
    return Refusal(
        "SCHEMA_INVALID",
        f"period must be a half-year like 2026-H1 between {EARLIEST_DAY.year} and "
        f"{LATEST_DAY.year}, got {period!r}",
    )


def check_dates(cert: CertificateContent, max_validity_days: int) -> Refusal | None:
    """INVALID_DATES: plausible days, expiry after issue, no more than ``max_validity_days``."""
    issued, expires = cert.date_of_issue, cert.date_of_expiry
    refusal = check_day("date_of_issue", issued) or check_day("date_of_expiry", expires)
    if refusal is not None:
        return refusal
    if expires <= issued:
        return Refusal(
            "INVALID_DATES",
            f"date_of_expiry {expires.isoformat()} is not after date_of_issue {issued.isoformat()}",
        )
    days = (expires - issued).days
    if days > max_validity_days:
        return Refusal(
            "INVALID_DATES",
            f"date_of_expiry {expires.isoformat()} is {days} days after date_of_issue "
            f"{issued.isoformat()}; the region allows at most {max_validity_days}",
        )
    return None


def check_issue_day(
    issued: date, applied_on: date, max_backdate_days: int | None
) -> Refusal | None:
    """INVALID_DATES for a date of issue after ``applied_on`` (the day the node applied the
    operation) with one day of slack for time zones, or more than ``max_backdate_days``
    before it (DESIGN §7)."""
    if (issued - applied_on).days > 1:
        return Refusal(
            "INVALID_DATES",
            f"date_of_issue {issued.isoformat()} is in the future (applied on "
            f"{applied_on.isoformat()})",
        )
    if max_backdate_days is not None and (applied_on - issued).days > max_backdate_days:
        return Refusal(
            "INVALID_DATES",
            f"date_of_issue {issued.isoformat()} is {(applied_on - issued).days} days before "
            f"{applied_on.isoformat()}; the region allows at most {max_backdate_days}",
        )
    return None


def _blank(value: str) -> bool:
    return not value.strip()


_PARTY = tuple(f.name for f in fields(Party))


def check_text_fields(cert: CertificateContent) -> Refusal | None:
    """SCHEMA_INVALID for a blank text field or an empty seal list (see the module notes)."""
    container = cert.container
    # Every certificate passes through here: the field names are spelt only for a refusal.
    if (
        container.seal_numbers
        and cert.issuing_authority.strip()
        and container.container_id.strip()
        and all(getattr(p, n).strip() for p in (cert.exporter, cert.importer) for n in _PARTY)
        and all(s.strip() for s in container.seal_numbers)
        and all(e.strip() for e in cert.lawful_import_evidence)
    ):
        return None
    return _text_refusal(cert)


def _text_refusal(cert: CertificateContent) -> Refusal | None:
    """The refusal of :func:`check_text_fields`, naming the first blank field in order."""
    named: list[tuple[str, str]] = [("issuing_authority", cert.issuing_authority)]
    for side in ("exporter", "importer"):
        party = getattr(cert, side)
        named += [(f"{side}.{f.name}", getattr(party, f.name)) for f in fields(party)]
    named.append(("container.container_id", cert.container.container_id))
    if not cert.container.seal_numbers:
        return Refusal("SCHEMA_INVALID", "container.seal_numbers must name at least one seal")
    named += [
        (f"container.seal_numbers[{i}]", s) for i, s in enumerate(cert.container.seal_numbers)
    ]
    named += [
        (f"lawful_import_evidence[{i}]", n) for i, n in enumerate(cert.lawful_import_evidence)
    ]
    for field, value in named:
        if _blank(value):
            return Refusal("SCHEMA_INVALID", f"{field} must be a non-empty string")
    return None


def check_certificate(
    cert: AnyCertificate,
    producer: str,
    book: Book,
    policy: Policy,
    *,
    region_code: str,
    members: Collection[str],
    applied_on: date | None = None,
) -> Refusal | None:
    """The first refusal for an issued certificate, or None.

    Order: issuer, number, destination and scope, text fields, origins, HS codes,
    quantities, totals, dates — who and which number first, then where to and from, then
    contents. A draft without a number skips the number check; without ``applied_on`` (the
    day the node applied the operation) the date of issue is not compared with it.
    """
    return (
        check_issuer(cert, producer, region_code=region_code, members=members)
        or check_number(cert, region_code=region_code)
        or check_destination(cert, book, region_code=region_code, members=members)
        or check_text_fields(cert)
        or check_origins(cert, book)
        or check_hs_codes(cert)
        or check_quantities(cert)
        or check_totals(cert)
        or check_dates(cert, policy.max_validity_days)
        or (
            None
            if applied_on is None
            else check_issue_day(cert.date_of_issue, applied_on, policy.max_backdate_days)
        )
    )


def check_duplicate(existing: Certificate | None, new: Certificate) -> Refusal | None:
    """DUPLICATE_CERTIFICATE when the number is taken by different content.

    The same content again is not a refusal: the caller treats it as a duplicate.
    """
    if existing is None or existing == new:
        return None
    for field in fields(CertificateContent):
        before, after = getattr(existing, field.name), getattr(new, field.name)
        if before != after:
            return Refusal(
                "DUPLICATE_CERTIFICATE",
                f"certificate_id {new.certificate_id} is already taken with a different "
                f"{field.name} ({json_of(before)}, now {json_of(after)})",
            )
    return Refusal("DUPLICATE_CERTIFICATE", f"certificate_id {new.certificate_id} is already taken")


def check_void_against(
    certificate_id: str, existing_state: str | None, issuer_matches: bool
) -> Refusal | None:
    """Whether a certificate in ``existing_state`` may be voided by this producer.

    ``existing_state`` is None when the certificate is unknown, else ISSUED, VOIDED, REPLACED
    or IMPORT_CONFIRMED; ``issuer_matches`` says whether the producer issued it (issued_by).
    UNKNOWN_CERTIFICATE for a certificate the producer never issued; NOT_ALLOWED once it is
    voided, replaced or confirmed at import (a shipped certificate is never cancelled).
    """
    if existing_state is None or not issuer_matches:
        return Refusal(
            "UNKNOWN_CERTIFICATE",
            f"certificate_id {certificate_id} was never issued by this authority",
        )
    if existing_state in VOIDABLE_STATES:
        return None
    if existing_state == CertificateState.IMPORT_CONFIRMED:
        why = "was already confirmed at import"
    else:
        why = f"is already {existing_state}"
    return Refusal("NOT_ALLOWED", f"certificate_id {certificate_id} {why} and cannot be voided")


def _number_format(number: str, issuer: str, region_code: str) -> Refusal | None:
    """BAD_CERTIFICATE_NUMBER for a number of the region or of a foreign issuer."""
    if issuer != region_code:
        return check_foreign(number, issuer)
    try:
        parse_regional(number, region_code)
    except Refusal as refusal:
        return refusal
    return None


def check_void(
    voiding: Voiding,
    producer: str,
    *,
    region_code: str,
    members: Collection[str],
    existing_state: str | None,
    issuer_matches: bool,
) -> Refusal | None:
    """The first refusal for a void: issuer, numbers, replacement, then the stored state."""
    expected = region_code if producer in members else producer
    if voiding.issuing_participant != expected:
        return Refusal(
            "ISSUER_MISMATCH",
            f"issuing_participant is {voiding.issuing_participant} but it comes from {producer}",
        )
    for number in (voiding.certificate_id, voiding.replaced_by):
        refusal = None if number is None else _number_format(number, expected, region_code)
        if refusal is not None:
            return refusal
    if voiding.replaced_by == voiding.certificate_id:
        return Refusal(
            "NOT_ALLOWED", f"replaced_by {voiding.replaced_by} is the voided certificate itself"
        )
    refusal = check_day("voided_on", voiding.voided_on)
    if refusal is not None:
        return refusal
    return check_void_against(voiding.certificate_id, existing_state, issuer_matches)


def check_import(
    confirmation: ImportConfirmation, producer: str, book: Book, *, region_code: str
) -> Refusal | None:
    """The first refusal for an import confirmation (see the module notes)."""
    if confirmation.importing_participant != producer:
        return Refusal(
            "ISSUER_MISMATCH",
            f"importing_participant is {confirmation.importing_participant} "
            f"but it comes from {producer}",
        )
    issuer = confirmation.issuing_participant
    refusal = standing("issuing_participant", issuer, book) or _number_format(
        confirmation.certificate_id, issuer, region_code
    )
    if refusal is not None:
        return refusal
    stated = [(f, getattr(confirmation, f)) for f in ("parcels", "carats", "value_usd")]
    return check_magnitudes(stated) or check_day("received_on", confirmation.received_on)


def check_production(
    declaration: ProductionDeclaration, producer: str, *, members: Collection[str]
) -> Refusal | None:
    """The first refusal for a production declaration: declarer, period, quantities."""
    if producer not in members or declaration.participant != producer:
        return Refusal(
            "ISSUER_MISMATCH",
            f"participant is {declaration.participant} but it comes from {producer}; "
            "only a member declares its own production",
        )
    return check_period(declaration.period) or check_magnitudes(
        [(f, getattr(declaration, f)) for f in ("carats", "value_usd")]
    )


def is_destination(destination: str, importer: str) -> bool:
    """Whether ``importer``'s confirmation may change a certificate naming ``destination``.

    Only the destination's own confirmation does (DESIGN §15). The registry never accepts a
    certificate naming the region itself (check_destination refuses it as its own issuer),
    so the reconciler's "a member confirms for the region" case does not arise here.
    """
    return importer == destination
