"""External trade figures (DESIGN §14): reading the files, and the rules that use them. Pure.

Global Witness found $10.2m of trade with non-participants in 2007 by setting KP figures beside
UN Comtrade's; Ivorian rebel diamonds left through Ghana. ``kpx registry import-trade`` reads
two shapes of CSV, recognised by their header:

- **plain**: ``period,reporter,partner,flow,hs_code,carats,value_usd`` — codes ISO alpha-2 or
  alpha-3, flow ``X`` (reporter exported to partner) or ``M`` (reporter imported from it);
- **UN Comtrade bulk**: ``refPeriodId`` or ``period``, ``reporterISO``, ``partnerISO``,
  ``flowCode``, ``cmdCode``, ``qty``, ``primaryValue`` (other columns are ignored).

Decisions taken here (the contract leaves them open):

- Only HS 7102 rows are kept (``7102`` or a sub-heading ``7102xx``); rows of other headings,
  flows other than X and M (re-exports RX, re-imports RM, ...) and Comtrade's World and area
  aggregates (``W00``, ``_X``, ``X1``, ``S19``, ...) are skipped and counted, not refused.
- Alpha-3 codes become alpha-2 with ``pycountry``; an alpha-2 code is kept as written (the
  region's own user-assigned code, ``EU``). Any other code is refused.
- Periods: ``YYYY``, ``YYYY-Hn``, ``YYYY-Qn``, ``YYYY-MM`` or ``YYYYMM``; Comtrade's
  ``refPeriodId`` ``YYYYMMDD`` is a month when ``freqCode`` is ``M``, else the year.
- Quantities are carats, values USD, rounded half-up to the cent; negative is refused.
- A malformed row raises :class:`~exchange.errors.MalformedTradeFile` naming its line and
  column; the caller keeps nothing of that file.
- The EU reports as 27 member states in Comtrade but is one KP participant: a member state's
  code counts as ``EU`` where the region lists ``EU`` (:func:`kp_code`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import pycountry

from exchange.domain.kpstats import CENT, Period
from exchange.errors import ConfigError, MalformedTradeFile

PLAIN = ("period", "reporter", "partner", "flow", "hs_code", "carats", "value_usd")
COMTRADE = ("reporterISO", "partnerISO", "flowCode", "cmdCode", "qty", "primaryValue")
FLOWS = ("X", "M")
# The EU's member states (2020 on): Comtrade reports each of them, the KP knows one EU.
EU_MEMBER_STATES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
    ]
)
_AGGREGATE = re.compile(r"W00|_X|X\d|[A-Z]\d\d")  # Comtrade's World and area codes
_MONTH = re.compile(r"(\d{4})-?(\d{2})")
_ALPHA2 = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One kept row: who traded with whom, which way, when, how much."""

    line: int
    period: str
    first: date
    last: date
    reporter: str
    partner: str
    flow: str
    hs_code: str
    carats: Decimal
    value_usd: Decimal


@dataclass(slots=True)
class Parsed:
    """What reading a file found: its format and how many rows were skipped (and why not)."""

    file_format: str = ""
    skipped: int = 0


def read_trade(lines: Iterable[str], parsed: Parsed) -> Iterator[TradeRow]:
    """The kept rows of a trade CSV, streamed; raises MalformedTradeFile at the first bad row."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise MalformedTradeFile.at(1, "header", "the file is empty")
    columns = {name.strip().lstrip("\ufeff"): i for i, name in enumerate(header)}
    parsed.file_format = _format_of(columns)
    read = _plain_row if parsed.file_format == "plain" else _comtrade_row
    for number, values in enumerate(reader, start=2):
        if not values:
            continue
        row = read(number, _Cells(number, values, columns))
        if row is None:
            parsed.skipped += 1
        else:
            yield row


def _format_of(columns: Mapping[str, int]) -> str:
    if all(c in columns for c in PLAIN):
        return "plain"
    if all(c in columns for c in COMTRADE) and ("period" in columns or "refPeriodId" in columns):
        return "comtrade"
    raise MalformedTradeFile.at(
        1,
        "header",
        f"needs the columns {','.join(PLAIN)} (plain) or refPeriodId|period,"
        f"{','.join(COMTRADE)} (UN Comtrade bulk)",
    )


class _Cells:
    """One row's cells by column name; errors name the line and the column."""

    __slots__ = ("columns", "line", "values")

    def __init__(self, line: int, values: Sequence[str], columns: Mapping[str, int]) -> None:
        self.line, self.values, self.columns = line, values, columns

    def has(self, name: str) -> bool:
        return name in self.columns

    def get(self, name: str) -> str:
        index = self.columns[name]
        if index >= len(self.values):
            raise self.bad(name, "is missing (the row is too short)")
        return self.values[index].strip()

    def bad(self, name: str, problem: str) -> MalformedTradeFile:
        return MalformedTradeFile.at(self.line, name, problem)


def _plain_row(line: int, cells: _Cells) -> TradeRow | None:
    hs = cells.get("hs_code").replace(".", "")
    if not hs.startswith("7102"):
        return None
    flow = cells.get("flow").upper()
    if flow not in FLOWS:
        raise cells.bad("flow", f"must be X or M, got {flow!r}")
    period, first, last = _period(cells, "period", cells.get("period"))
    return TradeRow(
        line, period, first, last, _code(cells, "reporter"), _code(cells, "partner"), flow,
        _heading(cells, "hs_code", hs), _amount(cells, "carats"), _amount(cells, "value_usd"),
    )  # fmt: skip


def _comtrade_row(line: int, cells: _Cells) -> TradeRow | None:
    hs, flow = cells.get("cmdCode"), cells.get("flowCode").upper()
    partner_raw = cells.get("partnerISO").upper()
    if not hs.startswith("7102") or flow not in FLOWS or _AGGREGATE.fullmatch(partner_raw):
        return None
    if cells.has("period"):
        name = "period"
        period, first, last = _period(cells, name, cells.get(name))
    else:
        name, text = "refPeriodId", cells.get("refPeriodId")
        monthly = cells.has("freqCode") and cells.get("freqCode").upper() == "M"
        period, first, last = _period(cells, name, text[:6] if monthly else text[:4])
    return TradeRow(
        line, period, first, last, _code(cells, "reporterISO"), _code(cells, "partnerISO"), flow,
        _heading(cells, "cmdCode", hs), _amount(cells, "qty"), _amount(cells, "primaryValue"),
    )  # fmt: skip


def _heading(cells: _Cells, column: str, hs: str) -> str:
    if hs not in ("7102", "710210", "710221", "710231"):
        raise cells.bad(column, f"{hs!r} is no HS 7102 heading or sub-heading")
    return hs


def _code(cells: _Cells, column: str) -> str:
    text = cells.get(column).upper()
    if _ALPHA2.fullmatch(text):
        return text
    country = pycountry.countries.get(alpha_3=text) if len(text) == 3 else None
    if country is None:
        raise cells.bad(column, f"{text!r} is no ISO 3166 alpha-2 or alpha-3 code")
    return str(country.alpha_2)


def _amount(cells: _Cells, column: str) -> Decimal:
    text = cells.get(column)
    try:
        value = Decimal(text).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise cells.bad(column, f"must be a number, got {text!r}") from None
    if not value.is_finite() or value < 0:
        raise cells.bad(column, f"must be a number of 0 or more, got {text!r}")
    return value


def _period(cells: _Cells, column: str, text: str) -> tuple[str, date, date]:
    month = _MONTH.fullmatch(text)
    if month is not None and 1 <= int(month.group(2)) <= 12:
        year, m = int(month.group(1)), int(month.group(2))
        first = date(year, m, 1)
        last = date(year + m // 12, m % 12 + 1, 1) - timedelta(days=1)
        return f"{year}-{m:02d}", first, last
    try:
        period = Period.parse(text)
    except ConfigError:
        raise cells.bad(
            column, f"must be YYYY, YYYY-Hn, YYYY-Qn or YYYY-MM, got {text!r}"
        ) from None
    return period.name, period.first, period.last


# ---------------------------------------------------------------- the rules


def kp_code(code: str, book: Mapping[str, object]) -> str:
    """The KP participant a country trades as: an EU member state is ``EU`` where listed."""
    return "EU" if code in EU_MEMBER_STATES and "EU" in book and code not in book else code


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A participant's status from ``effective`` on (None: since before any record)."""

    effective: date | None
    status: str


GOOD = frozenset({"ADMITTED", "REINSTATED"})


def standing_during(
    history: Sequence[StatusChange], first: date, last: date
) -> tuple[str, date | None] | None:
    """The first bad status (not ADMITTED/REINSTATED) a participant had during [first, last].

    ``history`` is the participant's changes in recording order. Returns the status and the
    day it held from (None when it held before ``first``), or None when the participant was
    in good standing throughout; an empty history means "no participant" (NO_PARTICIPANT).
    """
    if not history:
        return ("NO_PARTICIPANT", None)
    ordered = sorted(enumerate(history), key=lambda item: (item[1].effective or date.min, item[0]))
    status_at_first: str | None = None
    for _, change in ordered:
        if change.effective is None or change.effective <= first:
            status_at_first = change.status
    if status_at_first is None:
        status_at_first = "NO_PARTICIPANT"
    if status_at_first not in GOOD:
        return (status_at_first, None)
    for _, change in ordered:
        effective = change.effective
        if effective is not None and first < effective <= last and change.status not in GOOD:
            return (change.status, effective)
    return None


def non_participant_sentence(code: str, found: tuple[str, date | None]) -> str:
    """Why ``code`` was no participant in good standing: for a finding's detail."""
    status, since = found
    when = f" from {since.isoformat()}" if since else ""
    if status == "NO_PARTICIPANT":
        return f"{code} is no KP participant"
    if status == "SUSPENDED":
        return f"{code} was a suspended KP participant{when}"
    return f"{code} was no KP participant in good standing ({status}{when})"
