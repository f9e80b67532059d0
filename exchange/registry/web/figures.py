"""The statistics page's tables and charts, built from the rows ``kpx stats`` prints.

Pure: a :class:`~exchange.domain.kpstats.Report` (and earlier versions' rows for the lines over
time) in, tables and SVG out. The rows are never recomputed here — the downloads are
``kpstats.render`` of the very same report, so they equal ``kpx stats --format csv|json``.
Mirror mismatches are marked by the reconciler's own rule (``mirror_differences``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from exchange.domain.discrepancy import Flow, mirror_differences
from exchange.domain.kpstats import Row, per_carat
from exchange.registry.web.charts import Bar, bar_chart, line_chart

# (flow, by) of the trade rows charted, in page order.
TRADE_CHARTS: tuple[tuple[str, str], ...] = (
    ("export", "partner"),
    ("export", "origin"),
    ("export", "hs_code"),
    ("import", "partner"),
    ("import", "origin"),
    ("import", "hs_code"),
)


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: its message id (translated by the page) and its SVG."""

    title: str
    svg: str


@dataclass(frozen=True, slots=True)
class MirrorLine:
    """One exporter → importer pair, with the measures that differ beyond tolerance."""

    row: Row
    differing: tuple[str, ...]


def _dec(value: object) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def participants(rows: Iterable[Row]) -> list[str]:
    """Every reporting participant in the rows, sorted."""
    return sorted({str(r["participant"]) for r in rows if r["participant"]})


def only(rows: Sequence[Row], participant: str | None) -> list[Row]:
    """The rows of one participant, or all of them."""
    return [r for r in rows if participant in (None, "", r["participant"])]


def trade_charts(rows: Sequence[Row]) -> list[Chart]:
    """Carats by partner, origin and HS code, exports then imports, summed over participants."""
    charts = []
    for flow, by in TRADE_CHARTS:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for r in rows:
            if r["section"] == "trade" and r["flow"] == flow and r["by"] == by:
                totals[str(r["key"])] += _dec(r["carats"])
        bars = [Bar(k, v) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]
        title = f"{flow}s by {by}"
        charts.append(Chart(title, bar_chart(title, bars, "ct")))
    return charts


def production_chart(rows: Sequence[Row]) -> Chart:
    """Production carats per participant and half-year."""
    bars = [
        Bar(f"{r['participant']} {r['period']}", _dec(r["carats"]))
        for r in rows
        if r["section"] == "production"
    ]
    return Chart("production per half-year", bar_chart("production per half-year", bars, "ct"))


def usd_per_carat_chart(history: Mapping[str, Sequence[Row]]) -> Chart:
    """USD per carat of exports by origin, one line per origin over the periods given."""
    series: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
    for period, rows in history.items():
        sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for r in rows:
            if r["section"] == "trade" and r["flow"] == "export" and r["by"] == "origin":
                sums[str(r["key"])][0] += _dec(r["value_usd"])
                sums[str(r["key"])][1] += _dec(r["carats"])
        for origin, (usd, carats) in sums.items():
            price = per_carat(usd, carats)
            if price is not None:
                series[origin].append((period, price))
    title = "USD per carat by origin"
    return Chart(title, line_chart(title, series))


def mirror_lines(rows: Sequence[Row], pct: Decimal) -> list[MirrorLine]:
    """The mirror rows, each with the measures differing beyond the region's tolerance."""
    out = []
    for r in rows:
        if r["section"] != "mirror":
            continue
        exported = Flow(_dec(r["carats"]), _dec(r["value_usd"]), int(r["certificates"] or 0))
        imported = Flow(
            _dec(r["mirror_carats"]),
            _dec(r["mirror_value_usd"]),
            int(r["mirror_certificates"] or 0),
        )
        out.append(MirrorLine(r, tuple(mirror_differences(exported, imported, pct))))
    return out


def table(rows: Sequence[Row], section: str) -> list[Row]:
    """The rows of one section, in the report's (canonical) order."""
    return [r for r in rows if r["section"] == section]
