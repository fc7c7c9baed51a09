"""The group-sequential engine of the A/B report: one look of a planned schedule of looks.

A group-sequential test (Lan-DeMets alpha spending `alpha * t^2`, as Spotify's `confidence`;
`analysis.stats.sequential`) plans K looks at the data. At look k the primary metric's pooled z
is compared with that look's boundary, which spends only the alpha not spent at earlier looks:
crossing it decides (ramp or roll back), staying inside means "continue collecting", and the
final look (information 1) spends whatever is left, so over all K looks the false-positive rate
is alpha.

The information fraction t of the current look is the data's share of the planned sample
(`planned_users`, users in both arms at the final look) when it is given, else `look / looks`;
earlier looks are taken at their planned shares `j / looks`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from service.analysis.stats import (
    GroupSequentialResult,
    Interval,
    ProportionTestResult,
    group_sequential_bounds,
)

RHO = 2.0  # confidence's default power of the spending function


@dataclass(frozen=True)
class LookPlan:
    """The planned looks: how many, and which this is (or the planned sample to derive it)."""

    looks: int = 5
    look: int | None = None  # 1..looks; None: from the data's share of `planned_users`
    planned_users: int | None = None  # users in all compared arms at the final look

    def problems(self) -> list[str]:
        """What makes the plan unusable, in words naming the parameter."""
        found = []
        if self.looks < 1:
            found.append(f"looks={self.looks} must be at least 1")
        if self.look is not None and not 1 <= self.look <= self.looks:
            found.append(f"look={self.look} must lie in 1..looks ({self.looks})")
        if self.planned_users is not None and self.planned_users < 1:
            found.append(f"planned_users={self.planned_users} must be positive")
        if self.look is None and self.planned_users is None:
            found.append(
                "the group-sequential engine needs the current look (--look) or the planned "
                "sample (--planned-users) to know how much alpha this look may spend"
            )
        return found


@dataclass(frozen=True)
class GroupSequentialLook:
    """The primary metric at one look: its z against the boundary this look is allowed."""

    method: str
    look: int
    looks: int
    information: tuple[float, ...]  # every look's share so far, this one last
    bound: float  # |z| at or above it decides
    nominal_alpha: float  # the two-sided p-value threshold the bound amounts to
    alpha_spent: float  # alpha spent up to and including this look: alpha * t^rho
    alpha: float
    statistic: float  # the pooled two-proportion z
    p_value: float  # its nominal two-sided p-value
    difference: float
    interval: Interval  # repeated confidence interval: difference +- bound x SE
    crossed: bool
    final: bool


def group_sequential_look(
    test: ProportionTestResult, plan: LookPlan, alpha: float
) -> GroupSequentialLook | None:
    """This look of `plan` for the primary `test`; None when the plan is unusable."""
    if plan.problems():
        return None
    users = test.control.users + test.treatment.users
    share = min(1.0, users / plan.planned_users) if plan.planned_users else None
    k = plan.look or min(plan.looks, max(1, math.ceil((share or 0.0) * plan.looks - 1e-9)))
    final = k == plan.looks or share == 1.0
    earlier = tuple(j / plan.looks for j in range(1, k))
    now = 1.0 if final else k / plan.looks
    if not final and share is not None and share > (k - 1) / plan.looks:
        now = share  # the data's own share, once it is past the previous look's
    bounds = _bounds((*earlier, now), alpha)
    bound = bounds.bounds[-1]
    se = _unpooled_se(test)
    return GroupSequentialLook(
        method=f"{bounds.method}, look {k} of {plan.looks} (pooled z against the boundary)",
        look=k,
        looks=plan.looks,
        information=bounds.information,
        bound=bound,
        nominal_alpha=bounds.nominal_alpha[-1],
        alpha_spent=alpha * now**RHO,
        alpha=alpha,
        statistic=test.statistic,
        p_value=test.p_value,
        difference=test.difference,
        interval=Interval(
            test.difference - bound * se,
            test.difference + bound * se,
            1 - bounds.nominal_alpha[-1],
            "repeated confidence interval (difference +- boundary x unpooled SE)",
        ),
        crossed=bounds.reject(test.statistic),
        final=final,
    )


@functools.lru_cache(maxsize=512)
def _bounds(information: tuple[float, ...], alpha: float) -> GroupSequentialResult:
    # The boundaries depend only on the schedule: a report (or a simulation) that looks at the
    # planned shares integrates once per schedule.
    return group_sequential_bounds(information, alpha, sides=2, rho=RHO)


def _unpooled_se(test: ProportionTestResult) -> float:
    return math.sqrt(
        sum(
            arm.conversions / arm.users * (1 - arm.conversions / arm.users) / arm.users
            for arm in (test.control, test.treatment)
        )
    )
