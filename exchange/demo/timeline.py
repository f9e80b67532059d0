"""Which simulated dates the demo uses, chosen so that one as-of run finds exactly the seeds.

The reconciler's period checks (MIRROR_MISMATCH per quarter, EXPORTS_EXCEED_SUPPLY per
half-year) only judge periods *closed* as of the reconciliation date (last day + grace days
passed), while SEQUENCE_GAP needs the as-of date to lie past the gap timeout after the gap was
detected — on the real clock, i.e. today. So the plan uses:

- a **clean half-year**, closed as of the reconciliation date: all clean trade, and the seeded
  anomalies that leave every quarter's mirror and every half-year's supply balance intact
  (or break exactly the seeded one);
- an **open quarter** (and its open half-year) right after it: the seeded anomalies that add an
  import without an export (duplicate, wrong destination, voided, unknown, quantity
  mismatches), so they cannot also trip a mirror comparison that is not judged yet;
- an **as-of date** at least two days after today (past the 24 h gap timeout) and late enough
  that the open quarter has ``open_last`` (the last day an anomaly there may use) at least ten
  days after its first day, with ``open_last + grace < as_of``.

Pure: ``today`` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from exchange.domain.kpstats import Period, half_year_of, quarter_of

# Past the gap timeout (24 h) with a day to spare when the demo runs across midnight UTC.
_AFTER_TODAY = 2
# Days the open quarter must offer for its anomalies (issue, receipt, a second receipt).
_OPEN_WINDOW = 10


@dataclass(frozen=True, slots=True)
class Timeline:
    """The demo's simulated calendar."""

    today: date
    as_of: date
    clean: Period  # the closed half-year of the clean trade
    open_quarter: Period
    open_last: date  # the last day an open-quarter anomaly may use

    @classmethod
    def starting(cls, today: date, grace_days: int) -> Timeline:
        """The calendar for a demo run on ``today`` with the region's grace days."""
        first_try = today + timedelta(days=_AFTER_TODAY)
        open_quarter = Period.parse(quarter_of(first_try - timedelta(days=grace_days)))
        as_of = max(first_try, open_quarter.first + timedelta(days=grace_days + _OPEN_WINDOW + 1))
        clean = Period.parse(half_year_of(open_quarter.first - timedelta(days=1)))
        if clean.last >= open_quarter.first:  # the open quarter is the second of its half
            clean = Period.parse(half_year_of(clean.first - timedelta(days=1)))
        return cls(
            today=today,
            as_of=as_of,
            clean=clean,
            open_quarter=open_quarter,
            open_last=as_of - timedelta(days=grace_days + 1),
        )

    def clean_quarters(self) -> tuple[Period, Period]:
        """The two quarters of the clean half-year."""
        first = Period.parse(quarter_of(self.clean.first))
        return first, Period.parse(quarter_of(self.clean.last))

    def clean_day(self, fraction: float) -> date:
        """The day ``fraction`` (0..1) of the way through the clean half-year."""
        days = (self.clean.last - self.clean.first).days
        offset = min(days, max(0, int(fraction * (days + 1))))
        return self.clean.first + timedelta(days=offset)
