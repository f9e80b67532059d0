"""The seeded anomalies — one of every discrepancy kind of DESIGN §8 — and the whole plan.

Each seed is the smallest realistic story that raises exactly its own kind, and is recorded
with the key the reconciler must report it under (kind + certificate, or kind + participants +
period). Seeds that leave every mirror comparison intact (no confirmation to a participant
without a node, a late or short confirmation inside the quarter of issue, a broken seal, a
missing parcel, an absurd price) use the clean half-year; seeds that add an import without its
export use the open quarter, whose mirror is not judged yet (see ``timeline``). Pure.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from exchange.domain.certificate import CENT
from exchange.domain.certnumber import regional_number
from exchange.domain.region import Policy

from .production import declare_production, own_exports
from .registers import seed_registers, trade_file
from .timeline import Timeline
from .traffic import (
    MIN_CERTIFICATES,
    Builder,
    Op,
    ParcelPlan,
    Plan,
    Profile,
    Shipment,
    clean_confirmation,
    clean_trade,
    finish,
    mark_voided,
    received_day,
)

KINDS = (
    "UNCONFIRMED_EXPIRED",
    "UNKNOWN_CERTIFICATE",
    "DUPLICATE_IMPORT",
    "WRONG_DESTINATION",
    "CARAT_MISMATCH",
    "VALUE_MISMATCH",
    "PARCEL_MISMATCH",
    "SEAL_BROKEN",
    "IMPORTED_AFTER_EXPIRY",
    "VOIDED_BUT_IMPORTED",
    "VALUATION_OUTLIER",
    "EXPORTS_EXCEED_SUPPLY",
    "MIRROR_MISMATCH",
    "SEQUENCE_GAP",
    "PRODUCER_EXPORTS_EXCEED_PRODUCTION",
    "UNLICENSED_EXPORTER",
    "UNREGISTERED_PRODUCER",
    "NON_PARTICIPANT_TRADE",
    "EXTERNAL_MIRROR_MISMATCH",
)
HUB_CODES = ("EU", "AE", "IN")
NO_NODE = ("CH", "US", "IL")  # KP participants in good standing that run no node here
OUTLIER_FACTOR = Decimal(30)  # declared at 1/30 of the going price: a transfer-pricing tell


def make_plan(
    *,
    seed: int,
    duration: float,
    rate: float,
    members: Sequence[str],
    partners: Sequence[str],
    profiles: dict[str, Profile],
    policy: Policy,
    today: date,
    region: str = "XS",
) -> Plan:
    """The demo's whole plan; ValueError when the hubs EU, AE and IN are not all partners."""
    missing = [h for h in HUB_CODES if h not in partners]
    if missing or not members:
        raise ValueError(f"the demo needs members and the partners {HUB_CODES}, missing {missing}")
    b = Builder(
        random.Random(seed),
        Timeline.starting(today, policy.grace_days),
        region,
        tuple(members),
        tuple(partners),
        profiles,
        policy,
        duration,
    )
    mirror_pair = ("AE", b.rng.choice(b.members))
    b.reserved.add(mirror_pair)
    clean_trade(b, max(MIN_CERTIFICATES, round(rate * duration)))
    outlier_group = top_up_history(b)
    seed_closed_half(b, outlier_group, mirror_pair)
    seed_open_quarter(b)
    seed_registers(b)
    declare_production(b, seed_supply(b))
    seed_gap(b)
    return finish(b, seed, trade_file(b))


def _member_parcels(b: Builder, member: str, count: int | None = None) -> tuple[ParcelPlan, ...]:
    p = b.profiles[member]
    return b.parcels(
        p.mean_carats * b.rng.lognormvariate(0, 0.4),
        p.usd_per_ct,
        member,
        count or b.rng.randint(1, 3),
    )


def _at(b: Builder) -> float:
    return b.rng.uniform(0.1, 0.65) * b.duration


# ---------------------------------------------------------------- outlier history


def top_up_history(b: Builder) -> tuple[str, str]:
    """The (origin, HS code) with most parcels, topped up to a reliable median; returns it."""
    counts = Counter((p[3], p[0]) for s in b.shipments for p in s.parcels if p[3] in b.members)
    group = max(sorted(counts), key=lambda g: counts[g]) if counts else (b.members[0], "7102.31")
    member, hs = str(group[0]), group[1]
    need = b.policy.outlier_min_sample + 10 - counts[group]
    span = 0.75 * b.duration
    while need > 0:
        at = b.rng.uniform(0, span)
        p = b.profiles[member]
        parcels = b.parcels(p.mean_carats, p.usd_per_ct, member, min(4, need), hs=hs)
        destination = b.rng.choice(HUB_CODES)
        shipment = b.ship(at, member, destination, b.timeline.clean_day(at / span), parcels)
        clean_confirmation(b, shipment, at)
        need -= len(parcels)
    return member, hs


# ---------------------------------------------------------------- the closed half-year


def seed_closed_half(b: Builder, outlier: tuple[str, str], mirror_pair: tuple[str, str]) -> None:
    """The seeds that keep every mirror comparison intact, and the mirror seed itself."""
    # The order is the order of the random draws: changing it changes every seed's plan.
    _seed_unconfirmed_expired(b)
    _seed_imported_after_expiry(b)
    _confirmed_with(
        b, "SEAL_BROKEN", "the container seal was not intact on arrival", seal_intact=False
    )
    _confirmed_with(
        b, "PARCEL_MISMATCH", "one parcel fewer arrived (same weight: repacked?)", parcels_short=1
    )
    _seed_outlier(b, *outlier)
    _seed_mirror(b, *mirror_pair)


def _seed_unconfirmed_expired(b: Builder) -> None:
    """An export to a participant without a node here, so no confirmation ever comes back."""
    m = b.rng.choice(b.members)
    dest = b.rng.choice(NO_NODE)
    s = b.ship(
        _at(b),
        m,
        dest,
        b.timeline.clean.first + timedelta(days=b.rng.randint(0, 10)),
        _member_parcels(b, m),
        validity=30,
        label="UNCONFIRMED_EXPIRED",
    )
    b.seed(
        "UNCONFIRMED_EXPIRED",
        s,
        f"{m} exported {s.carats} ct to {dest}; no import "
        f"confirmation came back before {s.date_of_expiry} + grace",
    )


def _seed_imported_after_expiry(b: Builder) -> None:
    """A short-lived certificate that a hub confirms a few days after it expired."""
    m, hub = b.rng.choice(b.members), b.rng.choice(HUB_CODES)
    at = _at(b)
    s = b.ship(
        at,
        m,
        hub,
        b.timeline.clean.first + timedelta(days=b.rng.randint(5, 15)),
        _member_parcels(b, m),
        validity=14,
        label="IMPORTED_AFTER_EXPIRY",
    )
    late = s.date_of_expiry + timedelta(days=b.rng.randint(3, 6))
    b.confirm(b.later(at), hub, s, late, label="IMPORTED_AFTER_EXPIRY")
    b.seed(
        "IMPORTED_AFTER_EXPIRY", s, f"{hub} received it on {late}, after expiry {s.date_of_expiry}"
    )


def _confirmed_with(
    b: Builder, kind: str, story: str, *, seal_intact: bool = True, parcels_short: int = 0
) -> None:
    m, hub = b.rng.choice(b.members), b.rng.choice(HUB_CODES)
    at = _at(b)
    day = b.timeline.clean_day(b.rng.uniform(0.05, 0.9))
    s = b.ship(at, m, hub, day, _member_parcels(b, m, 2 + b.rng.randint(0, 2)), label=kind)
    b.confirm(
        b.later(at),
        hub,
        s,
        received_day(b, s),
        label=kind,
        seal_intact=seal_intact,
        parcels=len(s.parcels) - parcels_short,
    )
    b.seed(kind, s, f"{m} -> {hub}: {story}")


def _seed_outlier(b: Builder, member: str, hs: str) -> None:
    p = b.profiles[member]
    carats = Decimal("850.00")
    price = b.price(p.usd_per_ct, 1.0) / OUTLIER_FACTOR
    value = (carats * price).quantize(CENT)
    hub = b.rng.choice(HUB_CODES)
    at = _at(b)
    s = b.ship(
        at,
        member,
        hub,
        b.timeline.clean_day(b.rng.uniform(0.1, 0.9)),
        ((hs, carats, value, member),),
        label="VALUATION_OUTLIER",
    )
    b.confirm(b.later(at), hub, s, received_day(b, s), label="VALUATION_OUTLIER")
    price_text = (value / carats).quantize(CENT)
    b.seed(
        "VALUATION_OUTLIER",
        s,
        f"{member} origin, HS {hs}, declared at {price_text} "
        f"USD/ct, 1/{OUTLIER_FACTOR} of the going price",
    )


def _seed_mirror(b: Builder, partner: str, member: str) -> None:
    """The partner publishes two certificates into ``member``; ``member`` confirms three."""
    quarter = b.timeline.clean_quarters()[1]
    for _ in range(2):
        at = _at(b)
        day = quarter.first + timedelta(days=b.rng.randint(0, 60))
        s = b.ship(
            at,
            partner,
            member,
            day,
            b.parcels(600.0, Decimal(120), None, 1),
            label="MIRROR_MISMATCH",
        )
        b.confirm(b.later(at), member, s, received_day(b, s), label="MIRROR_MISMATCH")
    day = quarter.first + timedelta(days=b.rng.randint(0, 60))
    ghost = b.phantom(partner, member, day, b.parcels(600.0, Decimal(120), None, 1))
    b.confirm(_at(b), member, ghost, day + timedelta(days=2), label="MIRROR_MISMATCH")
    b.seed(
        "MIRROR_MISMATCH",
        None,
        f"{member} confirmed 3 imports from {partner} in {quarter.name}; {partner} published 2",
        participants=(partner, member),
        period=quarter.name,
    )


# ---------------------------------------------------------------- the open quarter


def seed_open_quarter(b: Builder) -> None:
    """The seeds that add an import without its export, in the quarter not judged yet."""
    # The order is the order of the random draws: changing it changes every seed's plan.
    _seed_unknown_certificate(b)
    _seed_duplicate_import(b)
    _seed_wrong_destination(b)
    _seed_voided_but_imported(b)
    _seed_carat_mismatch(b)
    _seed_value_mismatch(b)


def _seed_unknown_certificate(b: Builder) -> None:
    """A hub confirms a forged paper: a well-formed number its issuer never gave out."""
    q = b.timeline.open_quarter
    m = b.rng.choice(b.members)
    forged = regional_number(b.region, m, q.first.year, 9_000_000 + b.rng.randint(1, 999_999))
    ghost = b.phantom(m, "AE", q.first, _member_parcels(b, m), certificate_id=forged)
    b.confirm(
        _at(b),
        "AE",
        ghost,
        q.first + timedelta(days=b.rng.randint(0, 3)),
        label="UNKNOWN_CERTIFICATE",
    )
    b.seed("UNKNOWN_CERTIFICATE", ghost, f"AE confirmed {forged}, a number {m} never issued")


def _seed_duplicate_import(b: Builder) -> None:
    """The destination confirms one certificate twice, the second time within the quarter."""
    s, at = _open_shipment(b, "DUPLICATE_IMPORT")
    b.confirm(
        b.later(at), s.destination, s, s.date_of_issue + timedelta(days=1), label="DUPLICATE_IMPORT"
    )
    again = min(b.timeline.open_last, s.date_of_issue + timedelta(days=b.rng.randint(4, 8)))
    b.confirm(b.later(at, 3.5, 6.0), s.destination, s, again, label="DUPLICATE_IMPORT")
    b.seed("DUPLICATE_IMPORT", s, f"{s.destination} confirmed it twice (re-used certificate)")


def _seed_wrong_destination(b: Builder) -> None:
    """A certificate bound for EU is confirmed by IN, then by EU, which received it.

    EU's own confirmation keeps the certificate from expiring unconfirmed: a third party's
    confirmation never counts as the destination's (DESIGN §15), so without it the seed would
    also, rightly, raise UNCONFIRMED_EXPIRED.
    """
    s, at = _open_shipment(b, "WRONG_DESTINATION", destination="EU")
    at = b.later(at)
    b.confirm(at, "IN", s, s.date_of_issue + timedelta(days=2), label="WRONG_DESTINATION")
    b.confirm(b.later(at), "EU", s, s.date_of_issue + timedelta(days=3))
    b.seed("WRONG_DESTINATION", s, "bound for EU, confirmed by IN (and by EU, which received it)")


def _seed_voided_but_imported(b: Builder) -> None:
    """The issuer voids a certificate the day after issue; it is presented at import anyway."""
    s, at = _open_shipment(b, "VOIDED_BUT_IMPORTED")
    void = {
        "op": "void",
        "certificate_id": s.certificate_id,
        "reason": "buyer withdrew",
        "voided_on": (s.date_of_issue + timedelta(days=1)).isoformat(),
    }
    b.ops.append(Op(at + 0.3, s.issuer, void, "VOIDED_BUT_IMPORTED"))
    mark_voided(b, s)
    b.confirm(
        b.later(at, 2.0, 4.0),
        s.destination,
        s,
        s.date_of_issue + timedelta(days=3),
        label="VOIDED_BUT_IMPORTED",
        after_voided=s.certificate_id,
    )
    b.seed("VOIDED_BUT_IMPORTED", s, f"voided by {s.issuer}, then presented at import")


def _seed_carat_mismatch(b: Builder) -> None:
    """The destination receives 4 % fewer carats than the certificate states."""
    s, at = _open_shipment(b, "CARAT_MISMATCH")
    short = (s.carats * Decimal("0.96")).quantize(CENT)
    b.confirm(
        b.later(at),
        s.destination,
        s,
        s.date_of_issue + timedelta(days=2),
        label="CARAT_MISMATCH",
        carats=short,
    )
    b.seed("CARAT_MISMATCH", s, f"{s.carats} ct stated, {short} ct received")


def _seed_value_mismatch(b: Builder) -> None:
    """The destination assesses the parcels at 10 % below the certificate's value."""
    s, at = _open_shipment(b, "VALUE_MISMATCH")
    low = (s.value_usd * Decimal("0.90")).quantize(CENT)
    b.confirm(
        b.later(at),
        s.destination,
        s,
        s.date_of_issue + timedelta(days=2),
        label="VALUE_MISMATCH",
        value=low,
    )
    b.seed("VALUE_MISMATCH", s, f"{s.value_usd} USD stated, {low} USD assessed at import")


def _open_shipment(b: Builder, kind: str, destination: str | None = None) -> tuple[Shipment, float]:
    m = b.rng.choice(b.members)
    dest = destination or b.rng.choice(HUB_CODES)
    at = _at(b)
    day = b.timeline.open_quarter.first + timedelta(days=b.rng.randint(0, 2))
    return b.ship(at, m, dest, day, _member_parcels(b, m), validity=30, label=kind), at


# ---------------------------------------------------------------- supply and gap


def seed_supply(b: Builder) -> tuple[str, str]:
    """A member that declares less than half its own-origin exports (Congo 2004)."""
    half = b.timeline.clean.name
    exporters = [m for m in b.members if own_exports(b.shipments, m, half) > 0]
    member = b.rng.choice(exporters)
    exported = own_exports(b.shipments, member, half)
    b.seed(
        "EXPORTS_EXCEED_SUPPLY",
        None,
        f"{member} exported {exported} ct of its own origin "
        f"in {half} but declared under half of that as production",
        participants=(member,),
        period=half,
    )
    return member, half


def seed_gap(b: Builder) -> None:
    """One node loses a sequence number mid-run (an outbox row lost in a restore)."""
    late = [i for i, o in enumerate(b.ops) if o.at >= 0.45 * b.duration]
    preferred = [i for i in late if b.ops[i].node == "IN"] or late
    index = min(preferred, key=lambda i: b.ops[i].at)
    op = replace(b.ops[index], skip_sequence=True)
    b.ops[index] = op
    b.seed(
        "SEQUENCE_GAP",
        None,
        f"{op.node} lost one event: the registry sees a hole that never fills",
        participants=(op.node,),
    )
