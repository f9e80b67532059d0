"""The simulated trade plan of ``kpx demo``: pure and deterministic from the seed.

Members' certificate shares and prices come from ``exchange/data/kp_statistics.csv`` (2022
production: Botswana's volume at ~$192/ct, the DRC's ~$7/ct, Lesotho's ~$437/ct …). Each
clean certificate is issued by a member to a hub partner (EU, AE, IN) or to another member,
and confirmed by its destination within the region's tolerances, before expiry and in the
quarter of issue; a few shipments come into the region on partners' own certificates. Prices
are log-normal around the member's typical USD/ct per HS code, truncated at 1.5 sigma, so a
clean parcel never looks like a valuation outlier. Production is declared per member and
half-year above its own-origin exports. ``exchange.demo.anomalies`` then seeds one anomaly of
every discrepancy kind, each with the key under which the reconciler must report it.

Nothing here reads a clock, a file outside the package data, or the network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

from exchange.domain.certificate import CENT, amount_text, sum_of
from exchange.domain.certnumber import regional_number
from exchange.domain.discrepancy import within_pct
from exchange.domain.kpstats import Period, quarter_of
from exchange.domain.region import Policy

from .parties import FIRMS
from .timeline import Timeline

CSV_NAMES = {
    "Botswana": "BW",
    "South Africa": "ZA",
    "Namibia": "NA",
    "Lesotho": "LS",
    "Angola": "AO",
    "DRC": "CD",
    "Zimbabwe": "ZW",
}
HUBS = {"EU": 0.34, "AE": 0.24, "IN": 0.24}  # the rest of the weight is intra-regional
INTRA_WEIGHT = 0.18
PARTNER_SHARE = 0.04  # shipments into the region on a partner's own certificate
# (HS code, share of parcels, price factor against the member's average USD/ct)
HS_MIX = (("7102.31", 0.55, 1.35), ("7102.10", 0.30, 1.0), ("7102.21", 0.15, 0.12))
PRICE_SIGMA = 0.3  # ln(USD/ct) spread of clean parcels
PRICE_CUT = 1.5  # clean prices stay within PRICE_CUT sigma: robust z below ~2, never 3.5
HUB_USD_PER_CT = Decimal("120")  # mixed goods re-exported by hubs
MIN_CERTIFICATES = 30
# Firms' licence numbers <CODE>-LIC-<n>: the members register these as EXPORTER licences.
EXPORTER_LICENCES = (1001, 1002, 1003)

ParcelPlan = tuple[str, Decimal, Decimal, str | None]  # HS code, carats, USD, origin (or None)


@dataclass(frozen=True, slots=True)
class Profile:
    """A member's production figures: thousand carats a year and average USD per carat."""

    code: str
    kct: Decimal
    usd_per_ct: Decimal

    @property
    def weight(self) -> float:
        """Share of certificates: square root of volume (big producers ship bigger lots)."""
        return math.sqrt(float(self.kct))

    @property
    def mean_carats(self) -> float:
        """Mean carats per certificate, so that carat volumes keep their real proportions."""
        return 40 * math.sqrt(float(self.kct))


def profiles_from_csv(text: str, year: int = 2022) -> dict[str, Profile]:
    """Members' production profiles of ``year`` from the KP statistics CSV."""
    out = {}
    for r in csv.DictReader(io.StringIO(text)):
        code = CSV_NAMES.get(r["participant"])
        if code and r["metric"] == "production" and int(r["year"]) == year:
            out[code] = Profile(code, Decimal(r["kct"]), Decimal(r["usd_per_ct"]))
    return out


def load_profiles() -> dict[str, Profile]:
    """The profiles from the CSV shipped in the package."""
    text = resources.files("exchange").joinpath("data/kp_statistics.csv").read_text("utf-8")
    return profiles_from_csv(text)


@dataclass(frozen=True, slots=True)
class Op:
    """One JSON Lines operation a node submits ``at`` seconds into the traffic."""

    at: float
    node: str
    body: dict[str, Any]
    label: str = "clean"  # "clean", or the discrepancy kind this operation helps to seed
    after_voided: str | None = None  # wait until the registry shows this certificate voided
    skip_sequence: bool = False  # lose one of the node's sequence numbers just before

    def line(self) -> str:
        """The operation as one JSON line."""
        return json.dumps(self.body, separators=(",", ":"))


def key_of(
    kind: str, certificate_id: str | None, participants: Sequence[str], period: str | None
) -> tuple[str, str, str]:
    """Match key: kind + certificate, or kind + participants (in order) + period."""
    if certificate_id:
        return (kind, certificate_id, "")
    return (kind, ">".join(participants), period or "")


@dataclass(frozen=True, slots=True)
class Expected:
    """A seeded anomaly: what the reconciler must report, and the story behind it."""

    kind: str
    certificate_id: str | None
    participants: tuple[str, ...]
    period: str | None
    story: str

    @property
    def key(self) -> tuple[str, str, str]:
        return key_of(self.kind, self.certificate_id, self.participants, self.period)


@dataclass(frozen=True, slots=True)
class Shipment:
    """A planned certificate with what the plan needs to know about it later."""

    certificate_id: str
    issuer: str  # node code: a member, or a partner for its own certificates
    destination: str
    date_of_issue: date
    date_of_expiry: date
    parcels: tuple[ParcelPlan, ...]
    body: dict[str, Any]
    voided: bool = False

    @property
    def carats(self) -> Decimal:
        return sum_of(p[1] for p in self.parcels)

    @property
    def value_usd(self) -> Decimal:
        return sum_of(p[2] for p in self.parcels)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the demo submits, in time order, and every anomaly it must find."""

    seed: int
    timeline: Timeline
    members: tuple[str, ...]
    partners: tuple[str, ...]
    ops: tuple[Op, ...]
    shipments: tuple[Shipment, ...]
    expected: tuple[Expected, ...]
    trade_csv: str = ""  # the external trade file the demo imports before reconciling (§14)

    def count(self, op: str, label: str | None = None) -> int:
        """How many operations of one kind (optionally of one label) the plan holds."""
        return sum(
            1 for o in self.ops if o.body["op"] == op and (label is None or o.label == label)
        )


@dataclass
class Builder:
    """Accumulates shipments and operations; every random draw goes through ``rng``."""

    rng: random.Random
    timeline: Timeline
    region: str
    members: tuple[str, ...]
    partners: tuple[str, ...]
    profiles: dict[str, Profile]
    policy: Policy
    duration: float
    ops: list[Op] = field(default_factory=list)
    shipments: list[Shipment] = field(default_factory=list)
    expected: list[Expected] = field(default_factory=list)
    serials: dict[tuple[str, int], int] = field(default_factory=dict)
    reserved: set[tuple[str, str]] = field(default_factory=set)  # pairs clean trade leaves alone

    # -- numbers, parties, prices --

    def certificate_id(self, issuer: str, year: int) -> str:
        """The next number of ``issuer`` for ``year``: regional for members, own for partners."""
        serial = self.serials.get((issuer, year), 0) + 1
        self.serials[(issuer, year)] = serial
        if issuer in self.members:
            return regional_number(self.region, issuer, year, serial)
        return f"{issuer}-{year}-{serial:06d}"

    def party(self, country: str) -> dict[str, str]:
        """An exporter or importer firm of ``country``."""
        name, city = self.rng.choice(FIRMS.get(country, ((f"{country} Rough Trading", "—"),)))
        licence = f"{country}-LIC-{self.rng.choice(EXPORTER_LICENCES)}"
        return {"name": name, "address": city, "country": country, "licence_no": licence}

    def price(self, usd_per_ct: Decimal, factor: float) -> Decimal:
        """A clean USD/ct: log-normal around ``usd_per_ct * factor``, truncated."""
        z = self.rng.gauss(0.0, 1.0)
        while abs(z) > PRICE_CUT:
            z = self.rng.gauss(0.0, 1.0)
        return Decimal(str(float(usd_per_ct) * factor * math.exp(PRICE_SIGMA * z)))

    def parcels(
        self,
        total_carats: float,
        usd_per_ct: Decimal,
        origin: str | None,
        count: int,
        hs: str | None = None,
    ) -> tuple[ParcelPlan, ...]:
        """``count`` parcels of about ``total_carats`` together, each with a clean price."""
        out = []
        for _ in range(count):
            code, factor = hs, 1.0
            if hs is None:
                code, _, factor = self.rng.choices(HS_MIX, weights=[m[1] for m in HS_MIX])[0]
            else:
                factor = next(m[2] for m in HS_MIX if m[0] == hs)
            carats = max(
                Decimal("5.00"), _cents(total_carats / count * self.rng.lognormvariate(0, 0.4))
            )
            value = (carats * self.price(usd_per_ct, factor)).quantize(CENT)
            out.append((str(code), carats, value, origin))
        return tuple(out)

    # -- certificates and operations --

    def ship(
        self,
        at: float,
        issuer: str,
        destination: str,
        issued: date,
        parcels: Sequence[ParcelPlan],
        *,
        validity: int | None = None,
        label: str = "clean",
    ) -> Shipment:
        """Plan a certificate and its ``issue`` operation."""
        s = self.phantom(issuer, destination, issued, parcels, validity=validity)
        self.shipments.append(s)
        self.ops.append(Op(at, issuer, {"op": "issue", "certificate": s.body}, label))
        return s

    def phantom(
        self,
        issuer: str,
        destination: str,
        issued: date,
        parcels: Sequence[ParcelPlan],
        *,
        validity: int | None = None,
        certificate_id: str | None = None,
    ) -> Shipment:
        """A certificate as ``issuer`` would state it, without issuing it (a forged paper)."""
        validity = validity or self.rng.randint(min(30, self.max_validity), self.max_validity)
        cid = certificate_id or self.certificate_id(issuer, issued.year)
        expiry = issued + timedelta(days=validity)
        body = self._certificate_body(cid, issuer, destination, issued, expiry, parcels)
        return Shipment(cid, issuer, destination, issued, expiry, tuple(parcels), body)

    def _certificate_body(
        self,
        cid: str,
        issuer: str,
        destination: str,
        issued: date,
        expiry: date,
        parcels: Sequence[ParcelPlan],
    ) -> dict[str, Any]:
        """The certificate JSON; its draws keep their order, so a seed still gives the same plan."""
        member = issuer in self.members
        origin = (
            {"type": "UNMIXED", "countries": [issuer]}
            if member
            else {"type": "MIXED", "countries": ["RU", "CA"]}
        )
        return {
            "certificate_id": cid,
            "destination": destination,
            "origin": origin,
            "exporter": self.party(issuer),
            "importer": self.party(destination),
            "date_of_issue": issued.isoformat(),
            "date_of_expiry": expiry.isoformat(),
            "parcels": [_parcel_json(i, p) for i, p in enumerate(parcels, start=1)],
            "container": {
                "container_id": f"{issuer}-CT-{self.rng.randint(10000, 99999)}",
                "seal_numbers": [f"S{self.rng.randint(100000, 999999)}"],
            },
            "scope": "INTRA_REGIONAL" if member and destination in self.members else "EXTERNAL",
        }

    @property
    def max_validity(self) -> int:
        return self.policy.max_validity_days

    def confirm(
        self,
        at: float,
        node: str,
        s: Shipment,
        received: date,
        *,
        label: str = "clean",
        carats: Decimal | None = None,
        value: Decimal | None = None,
        parcels: int | None = None,
        seal_intact: bool = True,
        after_voided: str | None = None,
        remarks: str = "",
    ) -> None:
        """Plan ``node``'s import confirmation of ``s`` (its own figures unless overridden)."""
        body = {
            "op": "confirm_import",
            "certificate_id": s.certificate_id,
            "issuing_participant": self.region if s.issuer in self.members else s.issuer,
            "received_on": received.isoformat(),
            "parcels": len(s.parcels) if parcels is None else parcels,
            "carats": amount_text(s.carats if carats is None else carats),
            "value_usd": amount_text(s.value_usd if value is None else value),
            "seal_intact": seal_intact,
            "remarks": remarks,
        }
        self.ops.append(Op(at, node, body, label, after_voided=after_voided))

    def seed(
        self,
        kind: str,
        s: Shipment | None,
        story: str,
        *,
        participants: tuple[str, ...] = (),
        period: str | None = None,
    ) -> None:
        """Record a seeded anomaly and its match key."""
        self.expected.append(
            Expected(kind, s.certificate_id if s else None, participants, period, story)
        )

    def later(self, at: float, lo: float = 1.0, hi: float = 3.5) -> float:
        """A moment a little after ``at`` (a confirmation follows its certificate)."""
        return min(at + self.rng.uniform(lo, hi), 0.92 * self.duration)


def _cents(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


def _parcel_json(number: int, p: ParcelPlan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "parcel_no": number,
        "hs_code": p[0],
        "carats": amount_text(p[1]),
        "value_usd": amount_text(p[2]),
    }
    if p[3] is not None:
        out["origin_country"] = p[3]
    return out


# ---------------------------------------------------------------- clean trade


def clean_trade(b: Builder, count: int) -> None:
    """``count`` clean shipments over the first three quarters of the run, each confirmed."""
    span = 0.75 * b.duration
    weights = [b.profiles[m].weight for m in b.members]
    for i in range(count):
        at = (i + b.rng.random()) / count * span
        issued = b.timeline.clean_day(at / span)
        if b.rng.random() < PARTNER_SHARE:
            _partner_shipment(b, at, issued)
            continue
        member = b.rng.choices(b.members, weights=weights)[0]
        destination = _destination(b, member)
        p = b.profiles[member]
        parcels = b.parcels(
            p.mean_carats * b.rng.lognormvariate(0, 0.5), p.usd_per_ct, member, b.rng.randint(1, 4)
        )
        clean_confirmation(b, b.ship(at, member, destination, issued, parcels), at)


def _destination(b: Builder, member: str) -> str:
    others = [m for m in b.members if m != member]
    choices = [h for h in HUBS if h in b.partners] + others
    weights = [HUBS[h] for h in HUBS if h in b.partners]
    weights += [INTRA_WEIGHT / len(others) for _ in others]  # none with a single member
    return b.rng.choices(choices, weights=weights)[0]


def _partner_shipment(b: Builder, at: float, issued: date) -> None:
    """A hub's own certificate for rough going into the region (not the mirror seed's pair)."""
    pairs = [(p, m) for p in b.partners for m in b.members if (p, m) not in b.reserved]
    partner, member = b.rng.choice(pairs)
    parcels = b.parcels(800.0, HUB_USD_PER_CT, None, b.rng.randint(1, 3))
    clean_confirmation(b, b.ship(at, partner, member, issued, parcels), at)


def received_day(b: Builder, s: Shipment) -> date:
    """A clean receipt day: soon after issue, before expiry, inside the quarter of issue."""
    quarter_end = Period.parse(quarter_of(s.date_of_issue)).last
    return min(s.date_of_issue + timedelta(days=b.rng.randint(1, 9)), quarter_end, s.date_of_expiry)


def clean_confirmation(b: Builder, s: Shipment, at: float) -> None:
    """The destination confirms within tolerance, before expiry, in the quarter of issue."""
    received = received_day(b, s)
    tol = b.policy.tolerances
    carats, value = s.carats, s.value_usd
    if b.rng.random() < 0.25:  # scales differ a little between export and import
        got = _cents(float(carats) * (1 + b.rng.uniform(-0.002, 0.002)))
        carats = got if within_pct(s.carats, got, tol.carats_pct / 2) else carats
    if b.rng.random() < 0.4:  # the importing valuer's own appraisal
        got = _cents(float(value) * (1 + b.rng.uniform(-0.01, 0.01)))
        value = got if within_pct(s.value_usd, got, tol.value_pct / 2) else value
    b.confirm(b.later(at), s.destination, s, received, carats=carats, value=value)


def finish(b: Builder, seed: int, trade_csv: str = "") -> Plan:
    """The plan, operations in time order (stable for equal times)."""
    ops = sorted(b.ops, key=lambda o: o.at)
    return Plan(
        seed, b.timeline, b.members, b.partners, tuple(ops), tuple(b.shipments),
        tuple(b.expected), trade_csv,
    )  # fmt: skip


def mark_voided(b: Builder, s: Shipment) -> Shipment:
    """Record that ``s`` is voided (for the supply figures)."""
    voided = replace(s, voided=True)
    b.shipments[b.shipments.index(s)] = voided
    return voided
