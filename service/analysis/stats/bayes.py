"""Bayesian comparison of two arms, as GrowthBook's gbstats `EffectBayesianABTest`.

The relative lift `(mean_t - mean_c) / |mean_c|` is estimated with its delta-method variance;
a Gaussian prior on that lift (flat, i.e. improper, by default; or proper N(mean, variance))
gives a Gaussian posterior: its mean, a credible interval at `1 - alpha`, the chance that the
treatment is better, and the risk of choosing each arm (the expected lift given up by choosing
it when the other is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats

from service.analysis.stats.intervals import Interval
from service.analysis.stats.means import MomentStats
from service.analysis.stats.proportions import ProportionStats

RELATIVE_LIFT = "relative lift (treatment / control - 1)"


@dataclass(frozen=True)
class GaussianPrior:
    """A prior on the relative lift; `proper=False` is gbstats' default flat prior."""

    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


@dataclass(frozen=True)
class BayesianResult:
    """The posterior of the relative lift and what it says about choosing each arm."""

    method: str
    estimand: str
    expected: float  # posterior mean of the lift
    standard_deviation: float
    interval: Interval  # credible interval at 1 - alpha
    chance_to_win: float  # P(treatment better), with higher_is_better taken into account
    risk_control: float  # expected loss (in lift) of keeping control
    risk_treatment: float  # expected loss (in lift) of choosing the treatment
    prior: GaussianPrior


def bayesian_lift(
    lift: float,
    variance: float,
    alpha: float = 0.05,
    prior: GaussianPrior | None = None,
    higher_is_better: bool = True,
) -> BayesianResult:
    """Posterior of a lift estimated as `lift` with sampling variance `variance`."""
    prior = prior or GaussianPrior()
    if variance <= 0:
        raise ValueError("a Bayesian comparison needs a positive variance")
    precision = 1 / variance + (1 / prior.variance if prior.proper else 0.0)
    mean = (lift / variance + prior.mean / prior.variance) / precision if prior.proper else lift
    sd = math.sqrt(1 / precision)
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    p_better = float(scipy_stats.norm.sf(0, mean, sd))
    risk_control, risk_treatment = _risk(mean, sd)
    if not higher_is_better:  # an inverse metric: a negative lift wins
        p_better, (risk_control, risk_treatment) = 1 - p_better, (risk_treatment, risk_control)
    flat = "flat prior" if not prior.proper else f"N({prior.mean:g}, {prior.variance:g}) prior"
    return BayesianResult(
        f"Gaussian posterior of the relative lift ({flat})",
        RELATIVE_LIFT,
        mean,
        sd,
        Interval(mean - z * sd, mean + z * sd, 1 - alpha, "Gaussian credible interval"),
        p_better,
        risk_control,
        risk_treatment,
        prior,
    )


def _risk(mu: float, sigma: float) -> tuple[float, float]:
    """(risk of keeping control, risk of choosing the treatment): `E[max(X, 0)]` and
    `E[max(-X, 0)]` for X ~ N(mu, sigma^2), in closed form."""
    a = mu / sigma
    pdf, cdf = float(scipy_stats.norm.pdf(a)), float(scipy_stats.norm.cdf(a))
    return mu * cdf + sigma * pdf, -mu * (1 - cdf) + sigma * pdf


def bayesian_proportions(
    control: ProportionStats,
    treatment: ProportionStats,
    alpha: float = 0.05,
    prior: GaussianPrior | None = None,
    higher_is_better: bool = True,
) -> BayesianResult:
    """Conversion rates, each with variance `p (1 - p)` per user (gbstats
    `ProportionStatistic`)."""
    if control.users == 0 or treatment.users == 0 or not control.conversions:
        raise ValueError("a Bayesian comparison needs users in both arms and a control rate")
    p_c, p_t = control.conversions / control.users, treatment.conversions / treatment.users
    variance = _lift_variance(
        p_c, p_c * (1 - p_c) / control.users, p_t, p_t * (1 - p_t) / treatment.users
    )
    return bayesian_lift((p_t - p_c) / p_c, variance, alpha, prior, higher_is_better)


def bayesian_means(
    control: MomentStats,
    treatment: MomentStats,
    alpha: float = 0.05,
    prior: GaussianPrior | None = None,
    higher_is_better: bool = True,
) -> BayesianResult:
    """Means of a per-user metric, sample variances with n - 1 (gbstats `SampleMeanStatistic`)."""
    m_c, m_t = control.mean_y, treatment.mean_y
    if m_c == 0:
        raise ValueError("a relative lift needs a control mean other than 0")
    variance = _lift_variance(
        m_c, control.var_y() / control.n, m_t, treatment.var_y() / treatment.n
    )
    return bayesian_lift((m_t - m_c) / abs(m_c), variance, alpha, prior, higher_is_better)


def _lift_variance(mean_c: float, var_c: float, mean_t: float, var_t: float) -> float:
    return var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4
