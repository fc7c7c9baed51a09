"""One-sided tests and non-inferiority, as Spotify's `confidence` defines them.

A non-inferiority margin relative to the control is a share of the control's mean: the
treatment may be worse by at most `margin x |control mean|` on the difference scale (confidence's
`non_inferiority_margins=(margin, "increase"|"decrease")`). The test is one-sided at the
comparison's `alpha`; with a zero margin it is the plain one-sided superiority test.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.analysis.stats.intervals import critical, reference
from service.analysis.stats.means import EffectResult


@dataclass(frozen=True)
class NonInferiorityResult:
    """Is the treatment no worse than control by more than the margin allows?

    `outcome` is `non_inferior` (the one-sided bound clears the margin), `inferior` (the
    treatment is worse than the margin allows, one-sided at `alpha`) or `inconclusive`.
    Everything is on the difference scale: `estimate`, `bound` and `null_value`.
    """

    method: str
    metric: str
    margin: float
    relative: bool  # margin as a share of the control's mean (0.1 = 10% worse) or absolute
    higher_is_better: bool
    estimate: float | None
    bound: float | None  # the one-sided (1 - alpha) bound on the worse side
    p_value: float | None  # of H0: worse by at least the margin
    alpha: float
    outcome: str
    null_value: float | None = None  # the difference at the margin (its sign: the worse side)
    estimand: str = ""


def non_inferiority(
    effect: EffectResult,
    margin: float,
    *,
    relative: bool = False,
    higher_is_better: bool = False,
) -> NonInferiorityResult:
    """One-sided test of H0 "worse than control by `margin` or more" at `effect.alpha`.

    `relative=True` takes the margin as a share of the control's mean (as `confidence`);
    `margin=0` is the one-sided superiority test. The p-value and the bound use the effect's
    own reference distribution (t with its degrees of freedom, or normal).
    """
    if margin < 0:
        raise ValueError(f"a non-inferiority margin must not be negative, got {margin}")
    allowed = margin * abs(effect.control_estimate) if relative else margin
    sign = 1.0 if higher_is_better else -1.0  # +1: worse means a negative difference
    null = -sign * allowed
    kind = "relative to the control mean" if relative else "absolute"
    name = f"one-sided non-inferiority test (margin {kind})"
    estimand = f"{effect.estimand} (worse side bounded at {null:+.4g})"
    se, diff, alpha = effect.standard_error, effect.difference, effect.alpha
    if se <= 0:
        outcome = "non_inferior" if sign * (diff - null) > 0 else "inferior"
        p = 0.0 if outcome == "non_inferior" else 1.0
        return NonInferiorityResult(
            name, effect.metric, margin, relative, higher_is_better, diff, diff, p, alpha,
            outcome, null, estimand,
        )  # fmt: skip
    dist = reference(effect.degrees_of_freedom)
    q = critical(alpha, effect.degrees_of_freedom, sides=1)
    p_value = float(dist.sf(sign * (diff - null) / se))
    bound = diff - sign * q * se  # the worse side's one-sided bound
    better_bound = diff + sign * q * se
    if sign * (bound - null) > 0:
        outcome = "non_inferior"
    elif sign * (better_bound - null) < 0:
        outcome = "inferior"
    else:
        outcome = "inconclusive"
    return NonInferiorityResult(
        name, effect.metric, margin, relative, higher_is_better, diff, bound, p_value, alpha,
        outcome, null, estimand,
    )  # fmt: skip
