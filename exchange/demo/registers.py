"""The demo's register and external trade file (DESIGN §14), and the seeds that use them. Pure.

Every member registers, at the start of the run, its licensed exporters (the licence numbers
its certificates name: :data:`EXPORTER_LICENCES`), its mines (the producers its production
declarations name, ``production.MINES``; ``COOP-`` names are artisanal cooperatives) and one
or more artisanal cooperatives whose number of registered miners follows its 2022 volume in
``kp_statistics.csv`` (about one digger per 2,000 ct a year, the order of magnitude of the
DRC's artisanal output per digger). The region only records its registers, so nothing is
refused; the seeds below are what ``kpx reconcile`` must find:

- PRODUCER_EXPORTS_EXCEED_PRODUCTION: a cooperative's parcels, exported in the clean half-year,
  weigh more than twice what it declared (laundering through a registered producer);
- UNLICENSED_EXPORTER: a certificate naming an exporter licence no register holds;
- UNREGISTERED_PRODUCER: a production declaration of a producer no register holds;
- NON_PARTICIPANT_TRADE: the external file shows a member exporting rough to Mozambique, no
  KP participant (the route Marange stones took);
- EXTERNAL_MIRROR_MISMATCH: the external file's figure for a member and a hub is far above
  what the KP certificates say.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from exchange.domain.certificate import amount_text
from exchange.domain.kpstats import quarter_of

from .production import MINES
from .traffic import EXPORTER_LICENCES, Builder, Expected, Op, clean_confirmation

LICENSED_SINCE = date(2000, 1, 1)
NON_PARTICIPANT = "MZ"  # Mozambique: no KP participant (the example region does not list it)
CT_PER_DIGGER = 2000


def entry_ops(b: Builder) -> list[Op]:
    """Every member's registrations, due at the start of the run."""
    ops: list[Op] = []
    for member in b.members:
        entries = [
            _entry(f"{member}-EXP-{n}", "EXPORTER", f"{member}-LIC-{n}") for n in EXPORTER_LICENCES
        ]
        for mine in MINES.get(member, ("MINE-01",)):
            kind = "ARTISANAL_COOPERATIVE" if mine.startswith("COOP-") else "MINE"
            entries.append(_entry(f"{member}-{mine}", kind, f"{member}-ML-{mine}"))
        diggers = max(20, int(b.profiles[member].kct * 1000 / CT_PER_DIGGER))
        entries.append(
            _entry(f"{member}-COOP-A1", "ARTISANAL_COOPERATIVE", f"{member}-AC-1",
                   members=min(diggers, 50_000), zone=f"{member} artisanal zone 1")
        )  # fmt: skip
        ops += [Op(0.0, member, {"op": "register", "entry": e}) for e in entries]
    return ops


def _entry(entry_id: str, kind: str, licence: str, **extra: object) -> dict[str, object]:
    return {"kind": kind, "id": entry_id, "name": entry_id.split("-", 1)[1].title(),
            "licence_no": licence, "valid_from": LICENSED_SINCE.isoformat(), **extra}  # fmt: skip


def seed_registers(b: Builder) -> None:
    """The register ops and the register seeds.

    Run before ``declare_production``: the seeded cooperative's exports are the member's own
    origin, and the member-level supply balance covers them like any other export.
    """
    b.ops.extend(entry_ops(b))
    member = b.rng.choice(b.members)
    half = b.timeline.clean.name
    _seed_producer(b, member, half)
    _seed_unlicensed(b)
    _seed_unregistered(b, half)


def _seed_producer(b: Builder, member: str, half: str) -> None:
    producer = f"{member}-COOP-A1"
    at = b.rng.uniform(0.1, 0.6) * b.duration
    p = b.profiles[member]
    parcels = b.parcels(p.mean_carats, p.usd_per_ct, member, 2)
    s = b.ship(at, member, "EU", b.timeline.clean_day(0.3), parcels,
               label="PRODUCER_EXPORTS_EXCEED_PRODUCTION")  # fmt: skip
    for parcel in s.body["parcels"]:
        parcel["producer_id"] = producer
    clean_confirmation(b, s, at)
    declared = (s.carats * Decimal("0.4")).quantize(Decimal("0.01"))
    b.ops.append(
        Op(b.rng.uniform(0.80, 0.88) * b.duration, member,
           {"op": "declare_production", "period": half, "producer": producer,
            "carats": amount_text(declared), "value_usd": amount_text(declared * p.usd_per_ct)},
           "PRODUCER_EXPORTS_EXCEED_PRODUCTION")
    )  # fmt: skip
    b.expected.append(
        Expected("PRODUCER_EXPORTS_EXCEED_PRODUCTION", None, (member,), half,
                 f"cooperative {producer} exported {s.carats} ct in {half} but declared "
                 f"{declared} ct: stones of other origin laundered through a registered name")
    )  # fmt: skip


def _seed_unlicensed(b: Builder) -> None:
    member = b.rng.choice(b.members)
    at = b.rng.uniform(0.1, 0.6) * b.duration
    p = b.profiles[member]
    parcels = b.parcels(p.mean_carats, p.usd_per_ct, member, 1)
    s = b.ship(at, member, "AE", b.timeline.clean_day(0.5), parcels, label="UNLICENSED_EXPORTER")
    s.body["exporter"]["licence_no"] = f"{member}-LIC-EXPIRED-77"
    clean_confirmation(b, s, at)
    b.expected.append(
        Expected("UNLICENSED_EXPORTER", s.certificate_id, (member, "AE"), None,
                 "an exporter whose licence no register holds ships under a valid certificate")
    )  # fmt: skip


def _seed_unregistered(b: Builder, half: str) -> None:
    member = b.rng.choice(b.members)
    producer = f"{member}-PIT-UNLICENSED"
    b.ops.append(
        Op(b.rng.uniform(0.80, 0.88) * b.duration, member,
           {"op": "declare_production", "period": half, "producer": producer,
            "carats": "12.00", "value_usd": "900.00"}, "UNREGISTERED_PRODUCER")
    )  # fmt: skip
    b.expected.append(
        Expected("UNREGISTERED_PRODUCER", None, (member,), half,
                 f"{member} declares production of {producer}, a pit no register holds")
    )  # fmt: skip


def trade_file(b: Builder) -> str:
    """The external trade CSV (plain format) and its two seeds, one quarter of the clean half."""
    quarter = quarter_of(b.timeline.clean.first)
    shipper, mirrored = b.rng.choice(b.members), b.rng.choice(b.members)
    kp = sum(
        (s.carats for s in b.shipments if s.issuer == mirrored and s.destination == "IN"
         and quarter_of(s.date_of_issue) == quarter and not s.voided),
        Decimal("0.00"),
    )  # fmt: skip
    inflated = kp * 3 + Decimal("1000.00")
    b.expected += [
        Expected("NON_PARTICIPANT_TRADE", None, (shipper, NON_PARTICIPANT), quarter,
                 f"external data: {shipper} exported rough to Mozambique, no KP participant"),
        Expected("EXTERNAL_MIRROR_MISMATCH", None, (mirrored, "IN"), quarter,
                 f"external data put {mirrored}'s exports to India far above its certificates"),
    ]  # fmt: skip
    rows = [
        "period,reporter,partner,flow,hs_code,carats,value_usd",
        f"{quarter},{shipper},{NON_PARTICIPANT},X,7102.31,850.00,212500.00",
        f"{quarter},{mirrored},IN,X,7102,{inflated},{(inflated * 100).quantize(Decimal('1'))}",
        f"{quarter},{shipper},{NON_PARTICIPANT},X,8471.30,1.00,10.00",  # not rough: skipped
    ]
    return "\n".join(rows) + "\n"
