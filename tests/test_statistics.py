"""Periods, row shape, version diffs and formats of the KP statistics."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal as D

import pytest

from exchange.domain.kpstats import (
    COLUMNS,
    Period,
    Report,
    canonical,
    changes,
    half_year_of,
    quarter_of,
    render,
    row,
)
from exchange.errors import ConfigError


def test_periods_parse_to_their_first_and_last_days() -> None:
    assert Period.parse("2026-Q1") == Period(date(2026, 1, 1), date(2026, 3, 31), "2026-Q1")
    assert Period.parse("2026-H2") == Period(date(2026, 7, 1), date(2026, 12, 31), "2026-H2")
    assert Period.parse("2026").last == date(2026, 12, 31)
    assert Period.parse("2024-Q1").half_years() == ("2024-H1",)
    assert Period.parse("2026").half_years() == ("2026-H1", "2026-H2")


@pytest.mark.parametrize("text", ["2026-H3", "2026-Q5", "26-Q1", "2026Q1", ""])
def test_a_malformed_period_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match="--period"):
        Period.parse(text)


def test_half_years_and_quarters_of_a_day() -> None:
    assert half_year_of(date(2026, 6, 30)) == "2026-H1"
    assert half_year_of(date(2026, 7, 1)) == "2026-H2"
    assert quarter_of(date(2026, 4, 1)) == "2026-Q2"


def test_rows_carry_every_column_and_usd_per_carat() -> None:
    r = row(section="trade", carats=D("3.00"), value_usd=D("10.00"))
    assert list(r) == list(COLUMNS)
    assert r["usd_per_carat"] == D("3.33")
    assert row(carats=D("0.00"), value_usd=D("1.00"))["usd_per_carat"] is None


def _r(key: str, carats: str) -> dict[str, object]:
    return row(section="trade", participant="BW", period="2026-Q1", flow="export", by="partner",
               key=key, carats=D(carats), value_usd=D("10.00"), certificates=1)  # fmt: skip


def test_changes_list_rows_added_removed_and_revised() -> None:
    before = canonical([_r("EU", "1.00"), _r("AE", "2.00")])
    after = canonical([_r("EU", "1.50"), _r("IN", "3.00")])
    found = {c.key[-1]: (c.before is None, c.after is None) for c in changes(before, after)}
    assert found == {"AE": (False, True), "EU": (False, False), "IN": (True, False)}
    assert changes(before, before) == []


def _report() -> Report:
    rows = canonical([_r("EU", "1.00")])
    return Report("2026-Q1", 2, "2026-04-01T00:00:00+00:00", rows, 1, [], True)


def test_csv_has_the_stable_header_and_plain_figures() -> None:
    lines = render(_report(), "csv").splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "trade,BW,2026-Q1,export,partner,EU,1.00,10.00,10.00,1,,,"


def test_json_states_the_version_and_previous_version() -> None:
    doc = json.loads(render(_report(), "json"))
    assert (doc["version"], doc["previous_version"], doc["columns"]) == (2, 1, list(COLUMNS))


def test_table_starts_with_the_version_line() -> None:
    assert render(_report(), "table").startswith("KP statistics 2026-Q1: version 2 (new version")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="--format"):
        render(_report(), "xml")
