"""The reconciliation rules of DESIGN §8 as pure functions, thresholds passed in.

Two paths use them:

- **Event time** (the reconciler consumer): whenever a certificate, an import confirmation or
  a void arrives, :func:`certificate_findings` re-evaluates the certificate it concerns:
  DUPLICATE_IMPORT, WRONG_DESTINATION, CARAT/VALUE/PARCEL_MISMATCH, SEAL_BROKEN,
  IMPORTED_AFTER_EXPIRY, VOIDED_BUT_IMPORTED. Out of order is normal: a confirmation waits
  for its certificate, and the rules that need both fire when the second arrives.
- **As of a date** (``kpx reconcile --as-of``): UNCONFIRMED_EXPIRED, UNKNOWN_CERTIFICATE and
  VALUATION_OUTLIER run as set-based SQL over every certificate
  (exchange/reconciler/deadline_checks.py states each SQL predicate beside the function here it
  mirrors; the integration tests hit the same edges as the unit tests); EXPORTS_EXCEED_SUPPLY,
  MIRROR_MISMATCH and SEQUENCE_GAP aggregate in SQL (members x half-years, pairs x quarters,
  gap ranges: small) and decide here; the supply balances behind EXPORTS_EXCEED_SUPPLY are
  exchange/domain/supply.py, the robust statistics of VALUATION_OUTLIER
  exchange/domain/valuation.py.

All comparisons are exact decimal arithmetic: a tolerance of ``pct`` percent passes when
``|received - stated| * 100 <= stated * pct`` — exactly at the tolerance passes, one cent more
fails. Dates: a deadline ``d + grace`` passes on that day and fails the day after. Each
:class:`Discrepancy` has a ``dedup_key`` (kind + certificate, or kind + participants + period)
under which it is stored once. No function here raises on valid input.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from exchange.domain.kpstats import Period
from exchange.domain.region import Policy


@dataclass(frozen=True, slots=True)
class Limits:
    """The region's thresholds, as the rules take them."""

    carats_pct: Decimal = Decimal("0.5")
    value_pct: Decimal = Decimal("2")
    parcels: int = 0
    mirror_pct: Decimal = Decimal("5")
    grace_days: int = 30
    gap_timeout_hours: int = 24
    outlier_k: float = 3.5
    outlier_min_sample: int = 30
    carry_over: bool = True

    @classmethod
    def from_policy(cls, policy: Policy) -> Limits:
        """The limits of a region file's ``[policy]``."""
        t = policy.tolerances
        return cls(
            carats_pct=Decimal(t.carats_pct),
            value_pct=Decimal(t.value_pct),
            parcels=t.parcels,
            mirror_pct=Decimal(t.mirror_pct),
            grace_days=policy.grace_days,
            gap_timeout_hours=policy.gap_timeout_hours,
            outlier_k=float(policy.outlier_mad_k),
            outlier_min_sample=policy.outlier_min_sample,
            carry_over=policy.supply_carry_over,
        )


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """A finding: kind, what it concerns, and a sentence a regulator can act on."""

    kind: str
    detail: str
    certificate_id: str | None = None
    participants: tuple[str, ...] = ()
    period: str | None = None
    subject: str = ""  # distinguishes findings with no certificate (a gap's sequence range)

    @property
    def dedup_key(self) -> str:
        """Stored once under this key: re-running a check never duplicates a finding."""
        if self.certificate_id is not None:
            return f"{self.kind}:{self.certificate_id}"
        tail = f":{self.subject}" if self.subject else ""
        return f"{self.kind}:{'>'.join(self.participants)}:{self.period or ''}{tail}"


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the event-time rules need of an accepted certificate."""

    certificate_id: str
    exporter: str  # the issuing member, or the issuing participant for a partner's certificate
    destination: str
    date_of_expiry: date
    number_of_parcels: int
    total_carats: Decimal
    total_value_usd: Decimal
    voided_on: date | None = None
    replaced_by: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmationFacts:
    """What the event-time rules need of an import confirmation."""

    event_id: str
    certificate_id: str
    issuing_participant: str
    importing_participant: str
    received_on: date
    parcels: int
    carats: Decimal
    value_usd: Decimal
    seal_intact: bool


# ---------------------------------------------------------------- single comparisons


def within_pct(stated: Decimal, received: Decimal, pct: Decimal) -> bool:
    """``|received - stated|`` is at most ``pct`` percent of ``stated`` (exact decimals)."""
    return abs(received - stated) * 100 <= stated * pct


def destination_matches(
    destination: str, importer: str, region: str, members: Collection[str]
) -> bool:
    """The importer is the destination, or a member when the destination is the region."""
    return importer == destination or (destination == region and importer in members)


def after_expiry(date_of_expiry: date, received_on: date) -> bool:
    """Received after the certificate's last valid day (the day of expiry itself is fine)."""
    return received_on > date_of_expiry


def past_deadline(day: date, grace_days: int, as_of: date) -> bool:
    """``as_of`` is after ``day + grace_days``: that day passes, the day after fails."""
    return as_of > day + timedelta(days=grace_days)


def confirmed_by_destination(
    destination: str, importers: Iterable[str], region: str, members: Collection[str]
) -> bool:
    """Some confirmation came from the destination: only these count as ``confirmed``.

    Member isolation (DESIGN §15): a third party's confirmation is WRONG_DESTINATION and
    changes nothing, so it must not silence UNCONFIRMED_EXPIRED either.
    """
    return any(destination_matches(destination, i, region, members) for i in importers)


def unconfirmed_expired(
    date_of_expiry: date, grace_days: int, as_of: date, *, confirmed: bool, voided: bool
) -> bool:
    """UNCONFIRMED_EXPIRED: a live certificate with no confirmation after expiry + grace.

    ``confirmed`` means confirmed by the destination (``confirmed_by_destination``).
    """
    return not confirmed and not voided and past_deadline(date_of_expiry, grace_days, as_of)


def unknown_certificate(
    received_on: date, grace_days: int, as_of: date, *, accepted: bool, rejected: bool
) -> bool:
    """UNKNOWN_CERTIFICATE for a confirmed regional number.

    Fires when the registry never accepted the number and either rejected it, or the grace
    period after receipt passed without the certificate arriving.
    """
    return not accepted and (rejected or past_deadline(received_on, grace_days, as_of))


def gap_overdue(detected_at: datetime, as_of: date, timeout_hours: int) -> bool:
    """SEQUENCE_GAP: detected more than the timeout before the end of the as-of date (UTC)."""
    end_of_day = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=UTC)
    return detected_at < end_of_day - timedelta(hours=timeout_hours)


def period_closed(period: Period, grace_days: int, as_of: date) -> bool:
    """A period's figures are final once its last day plus the grace days has passed."""
    return past_deadline(period.last, grace_days, as_of)


# ---------------------------------------------------------------- mirror


@dataclass(frozen=True, slots=True)
class Flow:
    """Carats, USD and certificates of one side of a mirror comparison."""

    carats: Decimal
    value_usd: Decimal
    certificates: int


def mirror_differences(exported: Flow, imported: Flow, pct: Decimal) -> list[str]:
    """The measures (carats, value_usd, certificates) differing beyond ``pct`` of the larger."""
    pairs = {
        "carats": (exported.carats, imported.carats),
        "value_usd": (exported.value_usd, imported.value_usd),
        "certificates": (Decimal(exported.certificates), Decimal(imported.certificates)),
    }
    return [name for name, (a, b) in pairs.items() if abs(a - b) * 100 > max(a, b) * pct]


def mirror_finding(
    exporter: str, importer: str, period: str, exported: Flow, imported: Flow, pct: Decimal
) -> Discrepancy | None:
    """MIRROR_MISMATCH when any measure differs beyond the mirror tolerance, else None."""
    differing = mirror_differences(exported, imported, pct)
    if not differing:
        return None
    return Discrepancy(
        "MIRROR_MISMATCH",
        f"{exporter} -> {importer} in {period}: exports on accepted certificates "
        f"{exported.carats} ct, {exported.value_usd} USD, {exported.certificates} certificate(s) "
        f"vs confirmed imports {imported.carats} ct, {imported.value_usd} USD, "
        f"{imported.certificates} certificate(s); {', '.join(differing)} differ by more than "
        f"{pct}% of the larger figure",
        participants=(exporter, importer),
        period=period,
    )


def gap_finding(
    producer: str, first: int, last: int, detected_at: datetime, timeout_hours: int
) -> Discrepancy:
    """SEQUENCE_GAP for a producer's missing sequence numbers ``first..last``."""
    count = last - first + 1
    numbers = f"{first}" if first == last else f"{first}-{last}"
    return Discrepancy(
        "SEQUENCE_GAP",
        f"producer {producer}: event(s) {numbers} ({count} missing) detected missing at "
        f"{detected_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC did not arrive within the "
        f"{timeout_hours} h gap timeout",
        participants=(producer.split("-")[0],),
        subject=f"{producer}#{numbers}",
    )


# ---------------------------------------------------------------- event time


def _concerned(
    cert: CertificateFacts | None, confs: Sequence[ConfirmationFacts]
) -> tuple[str, ...]:
    codes = [cert.exporter, cert.destination] if cert else [c.issuing_participant for c in confs]
    codes += [c.importing_participant for c in confs]
    return tuple(dict.fromkeys(codes))


def certificate_findings(
    cert: CertificateFacts | None,
    confs: Sequence[ConfirmationFacts],
    limits: Limits,
    region: str,
    members: Collection[str],
) -> list[Discrepancy]:
    """Every event-time finding about one certificate and its confirmations (arrival order).

    Evaluated again whenever one of them arrives; the store keeps each dedup key once, so a
    finding is raised the first time its facts are all present.
    """
    if not confs:
        return []
    cid, who = confs[0].certificate_id, _concerned(cert, confs)
    broken = [c for c in confs if not c.seal_intact]
    found = [_seal(broken[0])] if broken else []
    # Member isolation (DESIGN §15): a third party's confirmation is WRONG_DESTINATION, not a
    # second presentation of the certificate, so only the destination's count as re-use.
    presented = confs if cert is None else _by_destination(cert, confs, region, members)
    if len(presented) > 1:
        found.append(_duplicate(presented))
    if cert is not None:
        found += _against_certificate(cert, confs, limits, region, members)
    return [Discrepancy(d.kind, d.detail, cid, who) for d in found]


def _by_destination(
    cert: CertificateFacts,
    confs: Sequence[ConfirmationFacts],
    region: str,
    members: Collection[str],
) -> list[ConfirmationFacts]:
    return [
        c
        for c in confs
        if destination_matches(cert.destination, c.importing_participant, region, members)
    ]


def _seal(c: ConfirmationFacts) -> Discrepancy:
    return Discrepancy(
        "SEAL_BROKEN",
        f"{c.importing_participant} reports the container seal of {c.certificate_id} not intact "
        f"on receipt on {c.received_on}",
    )


def _duplicate(confs: Sequence[ConfirmationFacts]) -> Discrepancy:
    seen = "; ".join(f"{c.importing_participant} on {c.received_on}" for c in confs)
    return Discrepancy(
        "DUPLICATE_IMPORT",
        f"{confs[0].certificate_id} was confirmed {len(confs)} times ({seen}): a certificate "
        "covers one shipment, so it has been presented again",
    )


def _against_certificate(
    cert: CertificateFacts,
    confs: Sequence[ConfirmationFacts],
    limits: Limits,
    region: str,
    members: Collection[str],
) -> list[Discrepancy]:
    found: dict[str, Discrepancy] = {}
    for c in confs:  # the first confirmation showing a problem describes it
        for d in _confirmation_vs_certificate(cert, c, limits, region, members):
            found.setdefault(d.kind, d)
    return list(found.values())


def _confirmation_vs_certificate(
    cert: CertificateFacts,
    c: ConfirmationFacts,
    limits: Limits,
    region: str,
    members: Collection[str],
) -> list[Discrepancy]:
    cid, who, on = cert.certificate_id, c.importing_participant, c.received_on
    out = []
    if not destination_matches(cert.destination, who, region, members):
        text = f"{cid} names {cert.destination} as destination but {who} confirmed it on {on}"
        out.append(Discrepancy("WRONG_DESTINATION", text))
    out += _quantities(cert, c, limits)
    if after_expiry(cert.date_of_expiry, on):
        late = (on - cert.date_of_expiry).days
        text = f"{cid} expired on {cert.date_of_expiry} but {who} received it on {on}, "
        out.append(Discrepancy("IMPORTED_AFTER_EXPIRY", text + f"{late} day(s) later"))
    if cert.voided_on is not None:
        how = f"replaced by {cert.replaced_by}" if cert.replaced_by else "voided"
        text = f"{cid} was {how} on {cert.voided_on} but {who} confirmed its import on {on}"
        out.append(Discrepancy("VOIDED_BUT_IMPORTED", text))
    return out


def _quantities(cert: CertificateFacts, c: ConfirmationFacts, limits: Limits) -> list[Discrepancy]:
    cid, who, on = cert.certificate_id, c.importing_participant, c.received_on
    out = []
    for kind, unit, stated, got, pct in (
        ("CARAT_MISMATCH", "ct", cert.total_carats, c.carats, limits.carats_pct),
        ("VALUE_MISMATCH", "USD", cert.total_value_usd, c.value_usd, limits.value_pct),
    ):
        if not within_pct(stated, got, pct):
            allowed = (stated * pct / 100).quantize(Decimal("0.0001"))
            text = (
                f"{cid} states {stated} {unit}, {who} received {got} {unit} on {on}: a "
                f"difference of {got - stated} {unit}, beyond the tolerance of {pct}% of the "
                f"stated figure ({allowed} {unit})"
            )
            out.append(Discrepancy(kind, text))
    if abs(c.parcels - cert.number_of_parcels) > limits.parcels:
        text = (
            f"{cid} states {cert.number_of_parcels} parcel(s), {who} received {c.parcels} on "
            f"{on}; the tolerance is {limits.parcels} parcel(s)"
        )
        out.append(Discrepancy("PARCEL_MISMATCH", text))
    return out
