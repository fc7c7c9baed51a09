"""The drill-down: the primary metric and the guardrails in each slice of segment, region and
any context field named with `--dimensions`. Exploratory by construction: it never changes the
decision, and its p-values are corrected (Holm) across every slice shown, because with many
slices some differ by chance alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import sqlalchemy as sa

from service.analysis.ab_evidence import GuardrailSpec, _guardrail
from service.analysis.queries import Window
from service.analysis.segment_queries import (
    NO_VALUE,
    ByArm,
    SliceCell,
    add_moments,
    dimensions_of,
    marginal,
    slice_cells,
)
from service.analysis.stats import (
    MomentStats,
    ProportionStats,
    adjust_p_values,
    two_proportion_test,
)

MAX_SLICES = 12  # per dimension; smaller slices are pooled as "(other)"
OTHER = "(other)"


@dataclass(frozen=True)
class SliceResult:
    """One slice: users per arm, the primary metric's comparison and each guardrail's outcome."""

    dimension: str
    value: str
    control_users: int
    treatment_users: int
    control_rate: float | None
    treatment_rate: float | None
    difference: float | None  # treatment - control, conversion rate
    interval: tuple[float, float] | None
    relative: float | None
    p_value: float | None
    adjusted_p: float | None = None  # Holm across every slice of every dimension
    guardrails: dict[str, str] = field(default_factory=dict)  # name -> outcome words


@dataclass(frozen=True)
class DrillDown:
    dimensions: tuple[str, ...]
    slices: list[SliceResult]
    alpha: float

    @property
    def comparisons(self) -> int:
        return sum(1 for s in self.slices if s.p_value is not None)

    def note(self) -> str:
        """The multiple-comparison note printed with the table."""
        n = self.comparisons
        return (
            f"Exploratory: {n} slice comparisons. At alpha {self.alpha:g} about "
            f"{n * self.alpha:.1f} of them would look significant by chance alone, so the "
            "p-values are Holm-corrected across all slices, and a slice that differs is a "
            "hypothesis for its own experiment, never a reason to ramp or roll back."
        )


def drill_down(
    engine: sa.Engine,
    *,
    flag: str,
    arms: tuple[str, str],
    metric: str,
    window: Window,
    dimensions: Sequence[str],
    alpha: float,
    guardrails: Sequence[GuardrailSpec] = (),
) -> DrillDown:
    """Every slice of every dimension, with the primary comparison and guardrail outcomes."""
    cells = slice_cells(
        engine, flag=flag, arms=arms, metric=metric, dimensions=dimensions, window=window
    )
    return drill_down_cells(
        cells, arms=arms, dimensions=dimensions, alpha=alpha, guardrails=guardrails
    )


def drill_down_cells(
    cells: Sequence[SliceCell],
    *,
    arms: tuple[str, str],
    dimensions: Sequence[str],
    alpha: float,
    guardrails: Sequence[GuardrailSpec] = (),
) -> DrillDown:
    """The drill-down from cells already read: the report's (`ab_summary(dimensions=...)`),
    which come from its one pass over the exposures, so the drill-down reads none again.

    Cells of other arms (A/B/n) are left out; users exposed to several arms are in no cell.
    """
    slices = []
    for index, dimension in enumerate(dimensions):
        by_value = _pooled(marginal(cells, index, arms), arms)
        for value, by_arm in by_value.items():
            slices.append(_slice(dimension, value, by_arm, arms, alpha, guardrails))
    tested = [(i, s.p_value) for i, s in enumerate(slices) if s.p_value is not None]
    adjusted = adjust_p_values([p for _, p in tested], "holm") if tested else []
    for (i, _raw), p in zip(tested, adjusted, strict=True):
        slices[i] = _with_adjusted(slices[i], p)
    return DrillDown(tuple(dimensions), slices, alpha)


def _pooled(by_value: dict[str, ByArm], arms: Sequence[str]) -> dict[str, ByArm]:
    """The MAX_SLICES - 1 largest slices (by users), the rest pooled as OTHER."""
    ordered = sorted(
        by_value.items(), key=lambda kv: (-sum(p.users for p, _ in kv[1].values()), kv[0])
    )
    if len(ordered) <= MAX_SLICES:
        return dict(ordered)
    kept, rest = ordered[: MAX_SLICES - 1], ordered[MAX_SLICES - 1 :]
    pooled: ByArm = {}
    for _value, by_arm in rest:
        for arm, (users, moments) in by_arm.items():
            total, sums = pooled.get(arm, (ProportionStats(arm, 0, 0), {}))
            total = ProportionStats(
                arm, total.users + users.users, total.conversions + users.conversions
            )
            added = {name: add_moments(sums.get(name), m) for name, m in moments.items()}
            pooled[arm] = (total, added)
    return {**dict(kept), OTHER: pooled}


def _slice(
    dimension: str,
    value: str,
    by_arm: ByArm,
    arms: tuple[str, str],
    alpha: float,
    guardrails: Sequence[GuardrailSpec],
) -> SliceResult:
    empty: tuple[ProportionStats, dict[str, MomentStats]] = (ProportionStats(arms[0], 0, 0), {})
    (control, c_moments), (treatment, t_moments) = (by_arm.get(arm, empty) for arm in arms)
    test = None
    converted = control.conversions + treatment.conversions
    if control.users and treatment.users and 0 < converted < control.users + treatment.users:
        test = two_proportion_test(control, treatment, alpha)
    outcomes = {}
    for spec in guardrails:
        c, t = c_moments.get(spec.name), t_moments.get(spec.name)
        if c is None or t is None:
            outcomes[spec.name] = "not measured"
            continue
        result = _guardrail(spec, {arms[0]: c, arms[1]: t}, arms, alpha)
        outcomes[spec.name] = (
            result.test.outcome.replace("_", "-") if result.test else "not measured"
        )
    return SliceResult(
        dimension=dimension,
        value=value,
        control_users=control.users,
        treatment_users=treatment.users,
        control_rate=control.rate if control.users else None,
        treatment_rate=treatment.rate if treatment.users else None,
        difference=test.difference if test else None,
        interval=(test.difference_interval.low, test.difference_interval.high) if test else None,
        relative=test.relative_lift if test else None,
        p_value=test.p_value if test else None,
        guardrails=outcomes,
    )


def _with_adjusted(s: SliceResult, p: float) -> SliceResult:
    return replace(s, adjusted_p=p)


__all__ = [
    "NO_VALUE",
    "DrillDown",
    "SliceResult",
    "dimensions_of",
    "drill_down",
    "drill_down_cells",
]
