"""Tests that stay valid when a report looks again and again.

- the normal-mixture SPRT (Johari et al. 2017): an always-valid p-value and confidence
  sequence, for a controller that looks after every batch of events;
- group-sequential alpha spending (Lan and DeMets 1983) with the power family
  `alpha * t^rho`, rho = 2, as Spotify's `confidence` (`sequential_bounds`), for a schedule of
  looks at known shares `t` of the planned sample: one boundary per look, computed by
  recursive numerical integration of the Brownian motion under the null.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

from service.analysis.stats.intervals import Interval


@dataclass(frozen=True)
class SequentialResult:
    """Mixture SPRT on a difference: an always-valid p-value and a confidence sequence."""

    method: str
    difference: float
    standard_error: float
    mixture_variance: float
    alpha: float
    likelihood_ratio: float
    p_value: float  # always valid at this look; a caller may keep the running minimum
    interval: Interval
    reject: bool


def sequential_test(
    difference: float, standard_error: float, alpha: float = 0.05, mixture_variance: float = 1e-4
) -> SequentialResult:
    """Normal-mixture SPRT (Johari et al. 2017, "Peeking at A/B tests"; Robbins 1970).

    With `V = standard_error^2` and a N(0, tau^2) mixture over the effect (`tau^2 =
    mixture_variance`, on the scale of `difference`), the mixture likelihood ratio is
    `sqrt(V / (V + tau^2)) exp(d^2 tau^2 / (2 V (V + tau^2)))`. `1 / LR` is an always-valid
    p-value and `{d : LR(d) < 1/alpha}` a confidence sequence, so a controller may look after
    every batch of events without inflating the false-positive rate.
    """
    if standard_error <= 0 or mixture_variance <= 0:
        raise ValueError("need a positive standard error and mixture variance")
    v, tau2 = standard_error**2, mixture_variance
    exponent = difference**2 * tau2 / (2 * v * (v + tau2))
    log_lr = 0.5 * math.log(v / (v + tau2)) + exponent
    half_width = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v) - 2 * math.log(alpha)))
    p_value = min(1.0, math.exp(-log_lr)) if log_lr < 700 else 0.0
    return SequentialResult(
        method="mixture SPRT (normal mixture), always-valid p-value and confidence sequence",
        difference=difference,
        standard_error=standard_error,
        mixture_variance=tau2,
        alpha=alpha,
        likelihood_ratio=math.exp(min(log_lr, 700)),
        p_value=p_value,
        interval=Interval(
            difference - half_width, difference + half_width, 1 - alpha, "mSPRT confidence sequence"
        ),
        reject=p_value <= alpha,
    )


# --- group-sequential alpha spending ----------------------------------------------------------

TRUNCATION = 8.0  # z below -8 is never reached: the lower end of the integration (confidence)
GRID = 1001  # integration points per look (Simpson's rule; odd)


@dataclass(frozen=True)
class GroupSequentialResult:
    """Boundaries of a group-sequential test: reject at look k when `|z_k| >= bounds[k]`
    (two-sided; `z_k >= bounds[k]` one-sided). `nominal_alpha[k]` is the p-value threshold the
    boundary amounts to at that look (confidence's `adjusted_alpha`)."""

    method: str
    information: tuple[float, ...]
    alpha: float
    sides: int
    rho: float
    bounds: tuple[float, ...]
    nominal_alpha: tuple[float, ...]

    def reject(self, z: float, look: int = -1) -> bool:
        """Whether `z` at `look` (default: the latest) crosses its boundary."""
        value = abs(z) if self.sides == 2 else z
        return value >= self.bounds[look]


def group_sequential_bounds(
    information: Sequence[float], alpha: float = 0.05, sides: int = 2, rho: float = 2.0
) -> GroupSequentialResult:
    """Lan-DeMets boundaries spending `alpha * t^rho` over the looks at `information` (the
    increasing shares t in (0, 1] of the planned sample seen at each look).

    As `confidence`, a two-sided test spends `alpha / 2` on each side and the boundary is found
    for one side. Each boundary `c_k` solves `P(Z_1 < c_1, ..., Z_{k-1} < c_{k-1}, Z_k >= c_k)
    = spend(t_k) - spend(t_(k-1))` under the null.
    """
    t = [float(x) for x in information]
    if not t or any(x <= 0 or x > 1 for x in t) or any(b <= a for a, b in itertools.pairwise(t)):
        raise ValueError(f"information shares must increase within (0, 1], got {t}")
    if sides not in (1, 2):
        raise ValueError("sides is 1 or 2")
    side_alpha = alpha / sides
    spent = [side_alpha * x**rho for x in t]
    bounds: list[float] = []
    grid = density = None
    for k, tk in enumerate(t):
        target = spent[k] - (spent[k - 1] if k else 0.0)
        if k == 0:
            c = float(scipy_stats.norm.isf(target))
        else:
            s = math.sqrt(tk - t[k - 1])
            c = _solve_bound(grid, density, s, math.sqrt(tk), target)
        bounds.append(min(c, TRUNCATION))
        grid, density = _continue(grid, density, t, k, bounds[-1])
    nominal = tuple(sides * float(scipy_stats.norm.sf(b)) for b in bounds)
    return GroupSequentialResult(
        f"group sequential, Lan-DeMets alpha spending alpha * t^{rho:g}",
        tuple(t),
        alpha,
        sides,
        rho,
        tuple(bounds),
        nominal,
    )


def _solve_bound(grid, density, s: float, root_t: float, target: float) -> float:
    """The z boundary at this look whose crossing probability (having not crossed before) is
    `target`; `grid`/`density` describe B(t_(k-1)) on the continuation region."""

    def crossing(c: float) -> float:
        return float(_simpson(density * scipy_stats.norm.sf((c * root_t - grid) / s), grid))

    if crossing(TRUNCATION) >= target:
        return TRUNCATION
    return float(
        optimize.brentq(lambda c: crossing(c) - target, -TRUNCATION, TRUNCATION, xtol=1e-10)
    )


def _continue(grid, density, t: list[float], k: int, bound: float):
    """Density of B(t_k) on (-8 sqrt(t_k), bound sqrt(t_k)) having not crossed before."""
    root = math.sqrt(t[k])
    new_grid = np.linspace(-TRUNCATION * root, bound * root, GRID)
    if k == 0:
        return new_grid, scipy_stats.norm.pdf(new_grid / root) / root
    s = math.sqrt(t[k] - t[k - 1])
    kernel = scipy_stats.norm.pdf((new_grid[:, None] - grid[None, :]) / s) / s
    return new_grid, _simpson(kernel * density[None, :], grid)


def _simpson(values, grid):
    """Simpson's rule along the last axis on an evenly spaced grid with an odd number of points."""
    h = (grid[-1] - grid[0]) / (len(grid) - 1)
    weights = np.ones(len(grid))
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return (values * weights).sum(axis=-1) * h / 3
