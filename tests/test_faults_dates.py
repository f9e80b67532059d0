"""Issue 11, item 13: the date of issue against the day the node applies the operation, filters
given in lower case or without a year, and ``kpx reconcile --as-of`` a future day (refused, by
the command, on a provisioned region)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from support.registry import REGION_DATA

from exchange.app.runtime import Runtime
from exchange.domain.region import parse_region
from exchange.domain.rules import check_issue_day
from exchange.errors import ConfigError
from exchange.reconciler.commands import discrepancy_filters

APPLIED = date(2026, 6, 10)
KPX = Path(sys.executable).with_name("kpx")


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


def _reconcile(rt: Runtime, day: date) -> subprocess.CompletedProcess[str]:
    env = rt.settings.child_env({"PATH": ""})
    return subprocess.run(
        [str(KPX), "--region", str(rt.settings.region_path), "reconcile", "--as-of",
         day.isoformat(), "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_reconcile_as_of_a_future_day_is_refused_naming_the_day_and_today(rt: Runtime) -> None:
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    done = _reconcile(rt, tomorrow)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"--as-of {tomorrow} is in the future (today is {today}, UTC)" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_reconcile_as_of_today_runs(rt: Runtime) -> None:
    today = datetime.now(UTC).date()
    done = _reconcile(rt, today)
    assert done.returncode == 0, done.stderr
    assert f'"as_of": "{today}"' in done.stdout
