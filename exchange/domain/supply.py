"""Supply balances (DESIGN §8): EXPORTS_EXCEED_SUPPLY, PRODUCER_EXPORTS_EXCEED_PRODUCTION; pure.

A member (or one of its producers) may export in a half-year what it declared it produced
plus the stock carried in from earlier half-years (when the region allows carry-over);
exporting more than that is what laundering rough of another origin through a member looks
like. The reconciler sums production and own-origin exports in SQL and walks them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from exchange.domain.discrepancy import Discrepancy


@dataclass(frozen=True, slots=True)
class SupplyPeriod:
    """A member's declared production and own-origin exports in one half-year."""

    period: str
    production: Decimal
    exports: Decimal


@dataclass(frozen=True, slots=True)
class SupplyBalance:
    """One half-year's balance: stock carried in, and whether exports exceeded supply."""

    period: str
    production: Decimal
    exports: Decimal
    carried_in: Decimal

    @property
    def exceeded(self) -> bool:
        return self.exports > self.production + self.carried_in


def supply_balances(periods: Sequence[SupplyPeriod], carry_over: bool) -> list[SupplyBalance]:
    """Walk a member's half-years in order, carrying unexported production forward.

    The stock carried into a period is what earlier periods produced and did not export,
    never below zero (an excess in one period does not pre-pay the next).
    """
    stock = Decimal("0.00")
    out = []
    for p in sorted(periods, key=lambda p: p.period):
        carried = stock if carry_over else Decimal("0.00")
        out.append(SupplyBalance(p.period, p.production, p.exports, carried))
        stock = max(Decimal("0.00"), carried + p.production - p.exports)
    return out


def supply_finding(member: str, b: SupplyBalance) -> Discrepancy:
    """EXPORTS_EXCEED_SUPPLY for a balance that is exceeded, with its figures."""
    supply = b.production + b.carried_in
    return Discrepancy(
        "EXPORTS_EXCEED_SUPPLY",
        f"{member} exported {b.exports} ct of {member} origin in {b.period}, more than its "
        f"supply of {supply} ct (declared production {b.production} ct + stock carried in "
        f"{b.carried_in} ct from earlier periods) by {b.exports - supply} ct",
        participants=(member,),
        period=b.period,
    )


def producer_exceeded(b: SupplyBalance, carats_pct: Decimal) -> bool:
    """PRODUCER_EXPORTS_EXCEED_PRODUCTION: exports beyond supply by more than ``carats_pct``.

    The producer's supply is its declared production plus the stock carried in (the same
    carry-over walk as EXPORTS_EXCEED_SUPPLY); the carats tolerance absorbs the scales of
    mine and export office: exactly at it passes, one cent more fails.
    """
    supply = b.production + b.carried_in
    return (b.exports - supply) * 100 > supply * carats_pct


def producer_finding(member: str, producer_id: str, b: SupplyBalance, pct: Decimal) -> Discrepancy:
    """PRODUCER_EXPORTS_EXCEED_PRODUCTION for an exceeded balance, with both figures."""
    supply = b.production + b.carried_in
    return Discrepancy(
        "PRODUCER_EXPORTS_EXCEED_PRODUCTION",
        f"{member}: parcels naming producer {producer_id} exported in {b.period} weigh "
        f"{b.exports} ct, but it declared production of {b.production} ct (+ {b.carried_in} ct "
        f"carried in from earlier periods = {supply} ct); {b.exports - supply} ct more, beyond "
        f"the {pct}% carats tolerance",
        participants=(member,),
        period=b.period,
        subject=producer_id,
    )
