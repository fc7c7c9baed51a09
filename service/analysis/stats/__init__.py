"""Statistics for the reports: pure functions over sufficient statistics, one concept a module.

- `intervals`: the interval every result carries, and its quantiles;
- `proportions`: binary metrics (z-test, Wald / Agresti-Caffo / Newcombe intervals, the
  relative lift's own test, SRM and chi-square over k arms, power);
- `means`: continuous and ratio metrics (Welch, delta method, CUPED as gbstats);
- `hypotheses`: one-sided and non-inferiority tests (margins relative to control, as
  Spotify's confidence);
- `sequential`: the mixture SPRT and group-sequential alpha spending;
- `bayes`: the Bayesian effect test (chance to win, risk, credible interval);
- `corrections`: Holm and Benjamini-Hochberg.

Every result names its method and estimand, because a decision is only as trustworthy as a
reader's ability to see how it was reached. The names below are the package's interface.
"""

from service.analysis.stats.bayes import (
    BayesianResult,
    GaussianPrior,
    bayesian_lift,
    bayesian_means,
    bayesian_proportions,
)
from service.analysis.stats.corrections import (
    ADJUSTMENT_NAMES,
    P_VALUE_ADJUSTMENTS,
    adjust_p_values,
    interval_alphas,
)
from service.analysis.stats.hypotheses import NonInferiorityResult, non_inferiority
from service.analysis.stats.intervals import Interval
from service.analysis.stats.means import (
    ArmEstimate,
    CupedResult,
    EffectResult,
    MeanPower,
    MomentStats,
    compare,
    cuped_test,
    mean_power,
    mean_power_analysis,
    pooled_adjusted,
    ratio_test,
    welch_test,
)
from service.analysis.stats.proportions import (
    DEFAULT_POWER,
    SRM_THRESHOLD,
    ArmsResult,
    PowerResult,
    ProportionStats,
    ProportionTestResult,
    SrmResult,
    cohens_h,
    compare_arms,
    difference_interval,
    power_analysis,
    proportion_power,
    rate_interval,
    relative_lift_test,
    srm_check,
    two_proportion_test,
)
from service.analysis.stats.sequential import (
    GroupSequentialResult,
    SequentialResult,
    group_sequential_bounds,
    sequential_test,
)

__all__ = [
    "ADJUSTMENT_NAMES",
    "DEFAULT_POWER",
    "P_VALUE_ADJUSTMENTS",
    "SRM_THRESHOLD",
    "ArmEstimate",
    "ArmsResult",
    "BayesianResult",
    "CupedResult",
    "EffectResult",
    "GaussianPrior",
    "GroupSequentialResult",
    "Interval",
    "MeanPower",
    "MomentStats",
    "NonInferiorityResult",
    "PowerResult",
    "ProportionStats",
    "ProportionTestResult",
    "SequentialResult",
    "SrmResult",
    "adjust_p_values",
    "bayesian_lift",
    "bayesian_means",
    "bayesian_proportions",
    "cohens_h",
    "compare",
    "compare_arms",
    "cuped_test",
    "difference_interval",
    "group_sequential_bounds",
    "interval_alphas",
    "mean_power",
    "mean_power_analysis",
    "non_inferiority",
    "pooled_adjusted",
    "power_analysis",
    "proportion_power",
    "rate_interval",
    "ratio_test",
    "relative_lift_test",
    "sequential_test",
    "srm_check",
    "two_proportion_test",
    "welch_test",
]
