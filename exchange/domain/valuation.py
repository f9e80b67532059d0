"""VALUATION_OUTLIER's statistics (DESIGN §8): robust z-scores of ln(USD/ct), pure.

Prices of rough diamonds differ by orders of magnitude between origins and HS codes, so each
certificate's price is compared, on a log scale, with the median of its own origin and HS
code; the spread is the median absolute deviation, which a few extreme values (the very
mis-declarations being sought) cannot inflate. ``kpx reconcile --as-of`` computes the same in
SQL (exchange/reconciler/deadline_checks.py states the predicate beside these functions).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

# Scales the MAD to the standard deviation of a normal distribution (Iglewicz and Hoaglin's
# modified z-score), so that the region's k = 3.5 means what the literature means by it.
MAD_SCALE = 0.6745


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and median absolute deviation of ln(USD/ct) for one origin and HS code."""

    median: float
    mad: float
    n: int


def log_price(value_usd: Decimal, carats: Decimal) -> float:
    """ln(USD per carat), the scale on which prices of different origins are comparable."""
    return math.log(float(value_usd) / float(carats))


def spread(sample: Sequence[float]) -> Spread:
    """Median and MAD of a non-empty sample (percentile_cont(0.5) in SQL is the same)."""
    med = statistics.median(sample)
    return Spread(med, statistics.median(abs(x - med) for x in sample), len(sample))


def robust_z(x: float, s: Spread) -> float | None:
    """The modified z-score 0.6745 (x - median) / MAD, or None when MAD is 0 (no scale)."""
    if s.mad == 0:
        return None
    return MAD_SCALE * (x - s.median) / s.mad


def is_outlier(x: float, s: Spread, k: float, min_sample: int) -> bool:
    """VALUATION_OUTLIER: enough history (n >= min_sample) and |robust z| > k."""
    z = robust_z(x, s)
    return s.n >= min_sample and z is not None and abs(z) > k
