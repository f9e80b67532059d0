"""Production declarations: each member and half-year, above its own-origin exports. Pure.

The supply check (EXPORTS_EXCEED_SUPPLY) compares a member's exports of its own origin with
its declared production; clean members declare 10-45 % more than they exported (stock is
kept back), the seeded member under half (the Republic of Congo 2004 pattern).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal

from exchange.domain.certificate import CENT, amount_text, sum_of
from exchange.domain.kpstats import half_year_of

from .traffic import Builder, Op, Shipment

MINES = {
    "BW": ("JWANENG", "ORAPA", "KAROWE"),
    "ZA": ("VENETIA", "FINSCH", "CULLINAN"),
    "NA": ("NAMDEB-MARINE", "ORANJEMUND"),
    "LS": ("LETSENG", "LIQHOBONG"),
    "AO": ("CATOCA", "LULO"),
    "CD": ("MIBA", "COOP-TSHIKAPA-017", "COOP-KASAI-042"),
    "ZW": ("MARANGE-ZCDC", "MUROWA"),
}


def own_exports(shipments: Sequence[Shipment], member: str, half: str) -> Decimal:
    """Carats of ``member`` origin that ``member`` exported in ``half`` (live certificates)."""
    return sum_of(
        p[1]
        for s in shipments
        if s.issuer == member and not s.voided and half_year_of(s.date_of_issue) == half
        for p in s.parcels
        if p[3] == member
    )


def declare_production(b: Builder, short: tuple[str, str] | None) -> None:
    """Each member declares each half-year's production above its own-origin exports.

    ``short`` (member, half-year) declares less than it exported: the supply seed.
    """
    halves = sorted({half_year_of(s.date_of_issue) for s in b.shipments})
    for member in b.members:
        for half in halves:
            exported = own_exports(b.shipments, member, half)
            if exported == 0:
                continue
            factor = 0.45 if (member, half) == short else b.rng.uniform(1.10, 1.45)
            _declare(b, member, half, exported * Decimal(str(factor)))


def _declare(b: Builder, member: str, half: str, carats: Decimal) -> None:
    mines = MINES.get(member, ("MINE-01",))[: b.rng.randint(1, 3)]
    share = (carats / len(mines)).quantize(CENT, rounding=ROUND_CEILING)
    price = b.profiles[member].usd_per_ct
    for mine in mines:
        at = b.rng.uniform(0.80, 0.88) * b.duration
        value = (share * price).quantize(CENT)
        body = {
            "op": "declare_production",
            "period": half,
            "producer": f"{member}-{mine}",
            "carats": amount_text(share),
            "value_usd": amount_text(value),
        }
        b.ops.append(Op(at, member, body))
