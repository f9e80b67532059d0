"""Issue 11, item 13: the date of issue against the day the node applies the operation, and
filters given in lower case or without a year."""

from __future__ import annotations

from datetime import date

import pytest
from support.registry import REGION_DATA

from exchange.domain.region import parse_region
from exchange.domain.rules import check_issue_day
from exchange.errors import ConfigError
from exchange.reconciler.commands import discrepancy_filters

APPLIED = date(2026, 6, 10)


def test_a_future_date_of_issue_has_one_day_of_slack() -> None:
    assert check_issue_day(date(2026, 6, 11), APPLIED, None) is None
    refusal = check_issue_day(date(2026, 6, 12), APPLIED, None)
    assert refusal is not None and refusal.code == "INVALID_DATES"


def test_max_backdate_days_refuses_one_more_day_than_it_allows() -> None:
    assert check_issue_day(date(2026, 6, 3), APPLIED, 7) is None
    refusal = check_issue_day(date(2026, 6, 2), APPLIED, 7)
    assert refusal is not None and refusal.code == "INVALID_DATES"
    assert check_issue_day(date(2003, 1, 1), APPLIED, None) is None  # unset: historical data


def test_max_backdate_days_is_read_from_the_region_file() -> None:
    assert parse_region(REGION_DATA).policy.max_backdate_days is None
    region = parse_region({**REGION_DATA, "policy": {"max_backdate_days": 14}})
    assert region.policy.max_backdate_days == 14
    with pytest.raises(ConfigError, match="max_backdate_days"):
        parse_region({**REGION_DATA, "policy": {"max_backdate_days": -1}})


def test_discrepancy_filters_are_normalised_or_refused_never_silently_empty() -> None:
    assert discrepancy_filters("bw", "2026-q1") == ("BW", "2026-Q1")
    assert discrepancy_filters(None, None) == (None, None)
    with pytest.raises(ConfigError, match="--period"):
        discrepancy_filters(None, "Q4")
    with pytest.raises(ConfigError, match="--participant"):
        discrepancy_filters("botswana", None)
