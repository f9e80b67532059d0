"""Server-side SVG charts of the KP statistics: horizontal bars and lines over time.

Pure: rows in, SVG text out, so the statistics page needs no JavaScript and nothing from a CDN.
Every label is XML-escaped (a participant code or key comes from events). Values are
``Decimal``; they are scaled to pixels only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

_BAR_HEIGHT = 24
_LABEL_WIDTH = 70
_PLOT_WIDTH = 230
_VALUE_WIDTH = 100
_PALETTE = ("#1f5fa8", "#c0392b", "#27864a", "#8e44ad", "#d68910", "#17a2b8", "#7f8c8d")


@dataclass(frozen=True, slots=True)
class Bar:
    """One labelled bar; ``highlight`` draws it in the warning colour (a mismatch)."""

    label: str
    value: Decimal
    highlight: bool = False


def _fmt(value: Decimal) -> str:
    return f"{value:,.2f}"


def bar_chart(title: str, bars: Sequence[Bar], unit: str = "") -> str:
    """A horizontal bar chart, one bar per row, longest bar = the largest value."""
    height = 8 + _BAR_HEIGHT * max(len(bars), 1)
    width = _LABEL_WIDTH + _PLOT_WIDTH + _VALUE_WIDTH
    top = max((b.value for b in bars), default=Decimal(0)) or Decimal(1)
    parts = [_open(width, height, title)]
    if not bars:
        parts.append('<text x="10" y="20" class="empty">—</text>')
    for i, b in enumerate(bars):
        y = 4 + i * _BAR_HEIGHT
        length = max(int(_PLOT_WIDTH * max(b.value, Decimal(0)) / top), 1)
        colour = "#c0392b" if b.highlight else _PALETTE[0]
        parts.append(
            f'<text x="{_LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end">{escape(b.label)}</text>'
            f'<rect x="{_LABEL_WIDTH}" y="{y + 3}" width="{length}" height="{_BAR_HEIGHT - 6}"'
            f' fill="{colour}"><title>{escape(b.label)}: {_fmt(b.value)} {escape(unit)}</title>'
            f'</rect><text x="{_LABEL_WIDTH + length + 4}" y="{y + 15}">{_fmt(b.value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart"'
        f' viewBox="0 0 {width} {height}" width="100%" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def line_chart(title: str, series: Mapping[str, Sequence[tuple[str, Decimal]]]) -> str:
    """Lines over ordered x labels (periods), one colour per series, with a legend."""
    xs = sorted({x for points in series.values() for x, _ in points})
    width, height, left, plot_h = 420, 250, 70, 160
    top = max((v for points in series.values() for _, v in points), default=Decimal(0))
    top = top or Decimal(1)
    step = (width - left - 20) / max(len(xs) - 1, 1)
    parts = [_open(width, height, title)]
    parts.append(f'<text x="4" y="34">{_fmt(top)}</text><text x="4" y="{30 + plot_h}">0</text>')
    for i, x in enumerate(xs):
        parts.append(
            f'<text x="{left + i * step:.0f}" y="{plot_h + 48}" text-anchor="middle">'
            f"{escape(x)}</text>"
        )
    for n, (name, points) in enumerate(sorted(series.items())):
        colour = _PALETTE[n % len(_PALETTE)]
        coords = " ".join(
            f"{left + xs.index(x) * step:.0f},{30 + plot_h - float(v / top) * plot_h:.0f}"
            for x, v in sorted(points)
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}">'
            f"<title>{escape(name)}</title></polyline>"
            f'<text x="{left + n * 70}" y="{height - 6}" fill="{colour}">■ {escape(name)}</text>'
        )
        for x, v in sorted(points):  # a dot per point: one period alone is still seen
            cx, cy = left + xs.index(x) * step, 30 + plot_h - float(v / top) * plot_h
            parts.append(
                f'<circle cx="{cx:.0f}" cy="{cy:.0f}" r="4" fill="{colour}">'
                f"<title>{escape(name)} {escape(x)}: {_fmt(v)}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)
