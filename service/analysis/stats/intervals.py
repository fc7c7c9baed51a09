"""What every statistic in the package shares: an interval, and the quantiles behind it.

Conventions, for every module of `analysis.stats`: `treatment - control` for differences,
`treatment / control - 1` for relative lifts, `alpha` the significance level (two-sided
intervals at `1 - alpha`, one-sided bounds at `1 - alpha` on their side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    """A confidence (or credible) interval `[low, high]` at `level`, computed by `method`.

    A one-sided bound has an infinite other end.
    """

    low: float
    high: float
    level: float
    method: str

    def contains(self, value: float) -> bool:
        """Whether `value` lies inside the interval (bounds included)."""
        return self.low <= value <= self.high


def reference(df: float | None) -> Any:
    """The reference distribution of a test statistic: Student's t at `df`, else the normal."""
    return scipy_stats.norm if df is None or math.isinf(df) else scipy_stats.t(df)


def two_sided_p(statistic: float, df: float | None = None) -> float:
    """Two-sided p-value of a z (df None) or t statistic."""
    return float(2 * reference(df).sf(abs(statistic)))


def critical(alpha: float, df: float | None = None, sides: int = 2) -> float:
    """The quantile a two-sided (or one-sided) test at `alpha` compares its statistic with."""
    return float(reference(df).ppf(1 - alpha / sides))


def welch_df(var_c: float, n_c: int, var_t: float, n_t: int) -> float:
    """Welch-Satterthwaite degrees of freedom from each arm's unit variance and size."""
    a, b = var_c / n_c, var_t / n_t
    if a + b <= 0:
        return math.inf
    return (a + b) ** 2 / (a**2 / (n_c - 1) + b**2 / (n_t - 1))
