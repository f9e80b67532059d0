"""KP statistics (Annex III): periods, the stable row shape, diffs between versions, formatting.

Pure: the figures are aggregated by set-based SQL in ``exchange/reconciler/aggregation.py``; this
module only names periods, shapes the rows, compares two versions and writes csv, json or a
table. Every run that changes a period's figures is stored as a new version; the output names
the version and, when an earlier one exists, lists the rows that changed since it.

Columns (stable; one flat shape for every section, empty where a column does not apply):

============== =====================================================================
column         meaning
============== =====================================================================
section        ``trade`` | ``production`` | ``mirror`` | ``register``
participant    reporting participant: exporter or importer (trade), producer
               (production), exporter (mirror). Members report under their own code.
period         the period asked for (``2026-Q1``, ``2026-H1``, ``2026``); for production
               the half-year the figures belong to (``2026-H1``); register: the period asked
flow           ``export`` | ``import`` (trade), ``production``, ``mirror``, ``register``
by             ``total`` | ``partner`` | ``origin`` | ``hs_code`` (trade); ``total`` |
               ``producer_kind`` (production); ``partner`` (mirror); ``licensed_mines`` |
               ``licensed_cooperatives`` | ``registered_miners`` | ``licensed_dealers`` |
               ``licensed_exporters`` (register: entries valid on the period's last day)
key            the partner code, origin country (``??`` when unknown), HS code
               (``7102.10``), producer kind (``industrial`` mine, ``artisanal``
               cooperative, ``unregistered``), or empty for ``total`` and register rows
carats         carats, 2 places (mirror: as the exporter's certificates state them)
value_usd      US dollars, 2 places (mirror: exporter's figure)
usd_per_carat  value_usd / carats, 2 places; empty when carats is 0
certificates   number of distinct certificates (exports: accepted, not voided, issued in
               the period; imports: import confirmations received in the period);
               production: number of declarations; register: the count itself
mirror_carats, mirror_value_usd, mirror_certificates
               mirror rows only: the importer's confirmed figures for the same pair and
               period, beside the exporter's
============== =====================================================================

Exports count certificates by ``date_of_issue``; imports count confirmations by
``received_on`` with the confirmed carats and USD (by partner and total), and the certificate's
parcels of confirmed certificates (by origin and HS code: a confirmation is not split by
parcel). Errors: :class:`~exchange.errors.ConfigError` for a period that is not
``YYYY``, ``YYYY-Hn`` or ``YYYY-Qn``, or an unknown format.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from exchange.errors import ConfigError

COLUMNS: tuple[str, ...] = (
    "section",
    "participant",
    "period",
    "flow",
    "by",
    "key",
    "carats",
    "value_usd",
    "usd_per_carat",
    "certificates",
    "mirror_carats",
    "mirror_value_usd",
    "mirror_certificates",
)
# The columns that identify a row across versions; the others are its figures.
KEY_COLUMNS: tuple[str, ...] = ("section", "participant", "period", "flow", "by", "key")
FORMATS: tuple[str, ...] = ("csv", "json", "table")
CENT = Decimal("0.01")
_PERIOD = re.compile(r"(\d{4})(?:-([HQ])([1-4]))?")

Row = dict[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A calendar year, half-year or quarter: ``2026``, ``2026-H1``, ``2026-Q3``."""

    first: date
    last: date
    name: str

    @classmethod
    def parse(cls, text: str) -> Period:
        """Read ``YYYY``, ``YYYY-H1|H2`` or ``YYYY-Q1..Q4``; raises ConfigError naming it."""
        match = _PERIOD.fullmatch(text.strip())
        if match is None or (match.group(2) == "H" and match.group(3) not in ("1", "2")):
            raise ConfigError(f"--period must be like 2026, 2026-H1 or 2026-Q1, got {text!r}")
        year, unit, n = int(match.group(1)), match.group(2), int(match.group(3) or 0)
        months = {None: (1, 12), "H": (6 * n - 5, 6 * n), "Q": (3 * n - 2, 3 * n)}[unit]
        return cls(date(year, months[0], 1), _month_end(year, months[1]), text.strip())

    def half_years(self) -> tuple[str, ...]:
        """The half-years this period overlaps (production is declared per half-year)."""
        halves = {half_year_of(self.first), half_year_of(self.last)}
        return tuple(sorted(halves))


def _month_end(year: int, month: int) -> date:
    following = date(year + month // 12, month % 12 + 1, 1)
    return following - timedelta(days=1)


def half_year_of(day: date) -> str:
    """``2026-H1`` for any day from January to June 2026."""
    return f"{day.year}-H{1 if day.month <= 6 else 2}"


def quarter_of(day: date) -> str:
    """``2026-Q2`` for any day from April to June 2026."""
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def per_carat(value_usd: Decimal, carats: Decimal) -> Decimal | None:
    """USD per carat to the cent, or None for zero carats."""
    if carats == 0:
        return None
    return (value_usd / carats).quantize(CENT)


def row(**values: Any) -> Row:
    """A statistics row with every column, missing ones None, usd_per_carat computed."""
    out: Row = {name: values.get(name) for name in COLUMNS}
    if out["carats"] is not None and out["value_usd"] is not None:
        out["usd_per_carat"] = per_carat(out["value_usd"], out["carats"])
    return out


def row_key(r: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity of a row across versions."""
    return tuple(str(r[name] or "") for name in KEY_COLUMNS)


def canonical(rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Rows sorted by key, figures as strings: what a version stores and compares."""
    plain = [{k: _text(r.get(k)) for k in COLUMNS} for r in rows]
    return sorted(plain, key=row_key)


def _text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value.quantize(CENT)}"
    return value


@dataclass(frozen=True, slots=True)
class Change:
    """One row that differs between two versions (``before`` or ``after`` None: added/gone)."""

    key: tuple[str, ...]
    before: Row | None
    after: Row | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": dict(zip(KEY_COLUMNS, self.key, strict=True)),
            "before": _figures(self.before),
            "after": _figures(self.after),
        }


def _figures(r: Row | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {k: v for k, v in r.items() if k not in KEY_COLUMNS}


def changes(before: Sequence[Row], after: Sequence[Row]) -> list[Change]:
    """Rows added, removed or with other figures, from ``before`` to ``after`` (canonical)."""
    old = {row_key(r): r for r in before}
    new = {row_key(r): r for r in after}
    found = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            found.append(Change(key, old.get(key), new.get(key)))
    return found


@dataclass(frozen=True, slots=True)
class Report:
    """One version of one period's figures and what changed since the previous version."""

    period: str
    version: int
    generated_at: str
    rows: list[Row]
    previous_version: int | None
    changes: list[Change]
    new_version: bool


def render(report: Report, fmt: str) -> str:
    """The report as ``csv``, ``json`` or a plain ``table``; raises ConfigError for others."""
    if fmt == "csv":
        return _csv(report.rows)
    if fmt == "json":
        return json.dumps(_json(report), indent=2) + "\n"
    if fmt == "table":
        return _table(report)
    raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    return out.getvalue()


def _json(report: Report) -> dict[str, Any]:
    return {
        "period": report.period,
        "version": report.version,
        "generated_at": report.generated_at,
        "previous_version": report.previous_version,
        "columns": list(COLUMNS),
        "rows": report.rows,
        "changes": [c.to_json() for c in report.changes],
    }


def summary_line(report: Report) -> str:
    """One sentence: the version, and what changed since the previous one."""
    status = "new version" if report.new_version else "unchanged"
    since = (
        f"{len(report.changes)} row(s) changed since version {report.previous_version}"
        if report.previous_version is not None
        else "first version"
    )
    return f"KP statistics {report.period}: version {report.version} ({status}; {since})"


def _table(report: Report) -> str:
    shown = ("participant", "flow", "by", "key", "carats", "value_usd", "usd_per_carat")
    lines = [summary_line(report)]
    for section in ("trade", "production", "mirror"):
        rows = [r for r in report.rows if r["section"] == section]
        if not rows:
            continue
        cols: tuple[str, ...] = (*shown, "certificates")
        if section == "mirror":
            cols = (*cols, "mirror_carats", "mirror_value_usd", "mirror_certificates")
        lines += ["", f"[{section}]", *_aligned(cols, rows)]
    for change in report.changes:
        lines.append(f"changed: {'/'.join(change.key)}: {change.before} -> {change.after}")
    return "\n".join(lines) + "\n"


def _aligned(cols: Sequence[str], rows: Sequence[Row]) -> list[str]:
    cells = [list(cols)] + [["" if r.get(c) is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
