"""Per-slice sufficient statistics for the drill-down, in one query for every dimension at once.

Each user gets one value per dimension (the smallest their exposures in the window carry, so a
user who moved regions counts once), their arm, whether they converted (as
`queries.ab_sample` counts it) and their guardrail sums (as `queries.guardrail_moments`). The
query groups by every dimension and the arm together; counts and sums are additive, so each
dimension's slices are the sums over the others (`marginal`), and the database is read once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from service.analysis.preflight import DIMENSION_COLUMNS
from service.analysis.queries import (
    _SEVERAL_ARMS,
    GUARDRAIL_COLUMNS,
    Window,
    _check_arms,
    _converted,
    _moment_columns,
    _moments,
    _read,
    arm_exposure_conditions,
    exposure_columns,
)
from service.analysis.stats import MomentStats, ProportionStats
from service.store.events import exposures

NO_VALUE = "(none)"
ByArm = dict[str, tuple[ProportionStats, dict[str, MomentStats]]]  # arm -> users, guardrail sums


@dataclass(frozen=True)
class SliceCell:
    """One combination of dimension values and one arm: users, conversions, guardrail sums."""

    values: tuple[str, ...]  # one per dimension, in the order asked for
    arm: str
    users: int
    conversions: int
    guardrails: dict[str, MomentStats]


def slice_cells(
    engine: sa.Engine,
    *,
    flag: str,
    arms: Sequence[str],
    metric: str,
    dimensions: Sequence[str],
    window: Window | None = None,
) -> list[SliceCell]:
    """Every (dimension values, arm) cell with users, for `dimensions` (segment, region, or a
    key of the exposures' `properties`)."""
    _check_arms(arms)
    exposed = _exposed(flag, arms, window or Window(), dimensions)
    arm_count = sa.func.count(sa.distinct(exposed.c.variant))
    labels = [f"d{i}" for i in range(len(dimensions))]
    users = (
        sa.select(
            exposed.c.user_id,
            sa.case(
                (arm_count > 1, sa.literal(_SEVERAL_ARMS)), else_=sa.func.min(exposed.c.variant)
            ).label("arm"),
            sa.func.min(exposed.c.ts).label("first_ts"),
            *(sa.func.min(exposed.c[label]).label(label) for label in labels),
            sa.func.count().label("requests"),
            sa.func.sum(exposed.c.error).label("errors"),
            sa.func.sum(exposed.c.fallback).label("fallbacks"),
            sa.func.coalesce(sa.func.sum(exposed.c.latency_ms), 0.0).label("latency_sum"),
            sa.func.count(exposed.c.latency_ms).label("latency_count"),
        )
        .group_by(exposed.c.user_id)
        .cte("slice_users")
    )
    converted = _converted(exposed, users, flag, metric)
    columns: list[Any] = [sa.func.count().label("n"), sa.func.count(converted.c.user_id).label("k")]
    for name, (num, den) in GUARDRAIL_COLUMNS.items():
        columns += _moment_columns(users.c[num], users.c[den], prefix=f"{name}_")
    keys = [users.c[label] for label in labels]
    query = (
        sa.select(*keys, users.c.arm, *columns)
        .select_from(users.outerjoin(converted, converted.c.user_id == users.c.user_id))
        .where(users.c.arm != _SEVERAL_ARMS)
        .group_by(*keys, users.c.arm)
    )
    return [_cell(row._mapping, labels) for row in _read(engine, query)]


def marginal(cells: Sequence[SliceCell], dimension: int, arms: Sequence[str]) -> dict[str, ByArm]:
    """`value -> arm -> (users and conversions, guardrail sums)` for one dimension."""
    found: dict[str, ByArm] = {}
    for cell in cells:
        arms_of = found.setdefault(cell.values[dimension], {})
        users, moments = arms_of.get(cell.arm, (ProportionStats(cell.arm, 0, 0), {}))
        users = ProportionStats(
            cell.arm, users.users + cell.users, users.conversions + cell.conversions
        )
        moments = {name: add_moments(moments.get(name), m) for name, m in cell.guardrails.items()}
        arms_of[cell.arm] = (users, moments)
    return {
        value: {arm: by_arm[arm] for arm in arms if arm in by_arm}
        for value, by_arm in found.items()
    }


def _exposed(flag: str, arms: Sequence[str], window: Window, dimensions: Sequence[str]) -> sa.CTE:
    """The exposures `queries._exposed` reads, with each dimension's value as d0, d1, ..."""
    e = exposures.c
    values = [
        (e[name] if name in DIMENSION_COLUMNS else e.properties[name].as_string()).label(f"d{i}")
        for i, name in enumerate(dimensions)
    ]
    return (
        sa.select(*exposure_columns(), *values)
        .where(*arm_exposure_conditions(flag, arms, window))
        .cte("slice_exposed")
    )


def _cell(row: Any, labels: Sequence[str]) -> SliceCell:
    arm = str(row["arm"])
    return SliceCell(
        values=tuple(NO_VALUE if row[label] is None else str(row[label]) for label in labels),
        arm=arm,
        users=int(row["n"]),
        conversions=int(row["k"]),
        guardrails={name: _moments(arm, row, prefix=f"{name}_") for name in GUARDRAIL_COLUMNS},
    )


def add_moments(total: MomentStats | None, more: MomentStats) -> MomentStats:
    """`total` plus `more` (sums are additive; None is nothing yet)."""
    if total is None:
        return more
    return MomentStats(
        more.arm,
        total.n + more.n,
        total.sum_y + more.sum_y,
        total.sum_y2 + more.sum_y2,
        total.sum_x + more.sum_x,
        total.sum_x2 + more.sum_x2,
        total.sum_xy + more.sum_xy,
    )
