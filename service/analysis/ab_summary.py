"""The whole A/B report's numbers from one pass over the exposures.

`ab_sample`, the primary metric's `metric_moments(binary=True)`, `guardrail_moments` and
`cumulative_by_bucket` (service.analysis.queries) each read every exposure of the flag again:
four scans, and four joins of millions of exposures to the outcomes (174 s for 10,000,000
exposures on PostgreSQL). Here one statement reads the exposures once, joined to the primary
metric's outcomes by request id, into a temporary table with one row per user (arm, first and
last exposure, requests, errors, fallbacks, latency, converted by request); every figure of the
report is then an aggregate over that table, a fraction of the exposures' size.

Same definitions, same numbers: the unit tests compare `ab_summary` with the four queries on
the same stores. Only outcomes without a request id (joined by user, after the first exposure)
and pre-exposure outcomes (CUPED's covariate) are looked up per user, through their indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from service.analysis.queries import (
    _SEVERAL_ARMS,
    GUARDRAIL_COLUMNS,
    AbSample,
    CumulativePoint,
    Window,
    _accumulate,
    _arm_stats,
    _check_arms,
    _floor_div,
    _from_epoch,
    _moment_columns,
    _moments,
    arm_exposure_conditions,
    bucket_seconds_for,
    request_hits,
)
from service.analysis.segment_queries import (
    SliceCell,
    cells_select,
    dimension_labels,
    dimension_value,
    slice_cell,
)
from service.analysis.stats import MomentStats
from service.store.events import exposures, outcomes

_USERS = "ab_report_users"
_SEVERAL = -1  # the arm index of users exposed to more than one arm


@dataclass(frozen=True)
class AbSummary:
    """What the A/B report reads from the store, all from one pass."""

    sample: AbSample
    primary_moments: dict[str, MomentStats]  # converted or not, per user (binary)
    guardrail_moments: dict[str, dict[str, MomentStats]]
    bucket_seconds: int
    points: list[CumulativePoint]
    # The drill-down's (dimension values, arm) cells, when `dimensions` were asked for: from
    # the same per-user table, so the drill-down reads no exposure a second time.
    slice_cells: list[SliceCell] = field(default_factory=list)


def ab_summary(
    engine: sa.Engine,
    *,
    flag: str,
    arms: Sequence[str],
    metric: str,
    window: Window | None = None,
    buckets: int = 20,
    dimensions: Sequence[str] = (),
) -> AbSummary:
    """The report's sample, primary moments, guardrails, cumulative series and, for each
    of `dimensions` (segment, region or a context field), the drill-down's cells, in one pass."""
    _check_arms(arms)
    window = window or Window()
    with engine.begin() as conn:  # one connection: the temporary table lives in it
        if conn.dialect.name == "postgresql":
            # Hash joins and in-memory aggregation over millions of rows (see queries._read).
            conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
            conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
            # The leader merges and finalises millions of per-user partial groups; scanning as
            # well, it starves the workers' output (10 M exposures on 2 cores: 16 s, not 21 s).
            conn.exec_driver_sql("SET LOCAL parallel_leader_participation = off")
        users = _create_users_table(conn, flag, arms, metric, window, dimensions)
        per_user = _per_user_values(users, flag, metric).subquery("per_user")
        name = {i: arm for i, arm in enumerate(arms)} | {_SEVERAL: _SEVERAL_ARMS}
        by_arm = {name[row.arm]: row._mapping for row in conn.execute(_by_arm(per_user))}
        sample = _sample(flag, metric, window, arms, by_arm)
        bucket = bucket_seconds_for(sample.first_exposure, sample.last_exposure, buckets)
        series = [
            _Point(name[row.arm], row.bucket, row.users, row.conversions)
            for row in conn.execute(_series(per_user, bucket, conn.dialect.name))
        ]
        labels = dimension_labels(dimensions)
        cells = (
            [
                slice_cell(row._mapping, labels, arms)
                for row in conn.execute(cells_select(per_user.c, labels, per_user.c.y))
            ]
            if dimensions
            else []
        )
        conn.exec_driver_sql(f"DROP TABLE {_USERS}")
    served = {arm: row for arm, row in by_arm.items() if arm != _SEVERAL_ARMS}
    return AbSummary(
        sample=sample,
        primary_moments={arm: _moments(arm, served.get(arm), "primary_") for arm in arms},
        guardrail_moments={
            name: {arm: _moments(arm, served.get(arm), f"{name}_") for arm in arms}
            for name in GUARDRAIL_COLUMNS
        },
        bucket_seconds=bucket,
        points=_accumulate(series, bucket),
        slice_cells=cells,
    )


def _create_users_table(
    conn: sa.Connection,
    flag: str,
    arms: Sequence[str],
    metric: str,
    window: Window,
    dimensions: Sequence[str],
) -> sa.TableClause:
    """One row per exposed user, made by a single scan of the exposures (see the docstring).

    Each dimension's value per user is the smallest their exposures carry (a user who moved
    regions counts once), as `segment_queries.slice_cells` takes it.
    """
    e = exposures.c
    hits = request_hits(metric)
    # The arm as its index in `arms` (-1: several): integers aggregate and group far faster
    # than text, whose min/max compare under the database's collation.
    index = sa.case({arm: i for i, arm in enumerate(arms)}, value=e.variant)
    first, last = sa.func.min(index), sa.func.max(index)
    conditions = arm_exposure_conditions(flag, arms, window)
    user, key = _user_key(conn.dialect.name)
    query = (
        sa.select(
            user,
            sa.case((first != last, sa.literal(_SEVERAL)), else_=first).label("arm"),
            sa.func.min(e.ts).label("first_ts"),
            sa.func.max(e.ts).label("last_ts"),
            *(
                sa.func.min(dimension_value(name)).label(label)
                for name, label in zip(dimensions, dimension_labels(dimensions), strict=True)
            ),
            sa.func.count().label("requests"),
            sa.func.sum(sa.case((e.status >= 500, 1), else_=0)).label("errors"),
            sa.func.sum(sa.case((e.fallback, 1), else_=0)).label("fallbacks"),
            sa.func.coalesce(sa.func.sum(e.latency_ms), 0.0).label("latency_sum"),
            sa.func.count(e.latency_ms).label("latency_count"),
            sa.func.max(sa.case((hits.c.best > 0, 1), else_=0)).label("by_request"),
        )
        .select_from(exposures.outerjoin(hits, hits.c.request_id == e.request_id))
        .where(*conditions)
        .group_by(key)
    )
    return _temporary_table(conn, _USERS, query)


def _temporary_table(conn: sa.Connection, name: str, query: sa.Select[Any]) -> sa.TableClause:
    """`query`'s rows as temporary table `name` (replacing one left by a failed run)."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    conn.execute(_CreateTemporaryTableAs(name, query))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {name}")
    return sa.table(name, *(sa.column(c.name) for c in query.selected_columns))


def _user_key(dialect: str) -> tuple[Any, Any]:
    """(the user id column to select, the key to group by).

    PostgreSQL groups millions of users by sorting; under a linguistic collation (C.UTF-8,
    en_US) every comparison goes through strcoll and no abbreviated keys, about 40% of the
    statement (measured at 10 M exposures). Grouping by the bytes ("C") gives the same groups,
    since equality under a deterministic collation is byte equality; the column selected goes
    back to the default collation, so later joins to other tables' user ids still compare.
    """
    if dialect != "postgresql":
        return exposures.c.user_id, exposures.c.user_id
    key = sa.collate(exposures.c.user_id, "C")
    return sa.collate(key, "default").label("user_id"), key


class _CreateTemporaryTableAs(sa.sql.expression.Executable, sa.sql.expression.ClauseElement):
    """`CREATE TEMPORARY TABLE name AS <select>`, executed as a statement of SQLAlchemy's so
    that the select's parameters go through their types' bind processors (SQLite's JSON paths).
    """

    inherit_cache = False

    def __init__(self, name: str, select: sa.Select[Any]) -> None:
        self.name = name
        self.select = select


@compiles(_CreateTemporaryTableAs)
def _compile_create_as(element: _CreateTemporaryTableAs, compiler: Any, **kw: Any) -> str:
    return f"CREATE TEMPORARY TABLE {element.name} AS {compiler.process(element.select, **kw)}"


def _per_user_values(users: sa.TableClause, flag: str, metric: str) -> sa.Select[Any]:
    """Each user's row with `converted` (y) and `converted_before` (x, CUPED's covariate)."""
    u, o = users.c, outcomes.c
    # Outcomes logged without a request id convert a user when they come at or after the
    # user's first exposure in the window (as queries._converted).
    by_user = (
        sa.select(u.user_id)
        .select_from(users.join(outcomes, o.user_id == u.user_id))
        .where(o.metric == metric, o.value > 0, o.flag == flag, o.request_id.is_(None))
        .where(o.ts >= u.first_ts)
        .distinct()
        .subquery("by_user")
    )
    # Before the user's first exposure to the flag ever (as queries._metric_values): that
    # exposure is at or before the first one in the window, so only outcomes before the latter
    # are candidates, and the flag's first exposure is looked up (by index) for those alone.
    first_ever = (
        sa.select(sa.func.min(exposures.c.ts))
        .where(exposures.c.user_id == o.user_id, exposures.c.flag == flag)
        .where(sa.not_(exposures.c.shadow))
        .scalar_subquery()
    )
    before = (
        sa.select(u.user_id)
        .select_from(users.join(outcomes, o.user_id == u.user_id))
        .where(o.metric == metric, o.value > 0, o.ts < u.first_ts, o.ts < first_ever)
        .distinct()
        .subquery("before")
    )
    converted = sa.or_(u.by_request == 1, by_user.c.user_id.is_not(None))
    return sa.select(
        *users.c,
        sa.case((converted, 1.0), else_=0.0).label("y"),
        sa.case((before.c.user_id.is_not(None), 1.0), else_=0.0).label("x"),
    ).select_from(
        users.outerjoin(by_user, by_user.c.user_id == u.user_id).outerjoin(
            before, before.c.user_id == u.user_id
        )
    )


def _by_arm(per_user: sa.Subquery) -> sa.Select[Any]:
    p = per_user.c
    columns: list[Any] = [
        p.arm,
        sa.func.count().label("n"),
        sa.func.sum(p.y).label("conversions"),
        sa.func.min(p.first_ts).label("first_ts"),
        sa.func.max(p.last_ts).label("last_ts"),
        *_moment_columns(p.y, p.x, prefix="primary_"),
    ]
    for name, (num, den) in GUARDRAIL_COLUMNS.items():
        columns += _moment_columns(p[num], p[den], prefix=f"{name}_")
    return sa.select(*columns).group_by(p.arm)


def _series(per_user: sa.Subquery, bucket_seconds: int, dialect: str) -> sa.Select[Any]:
    p = per_user.c
    bucket = _floor_div(p.first_ts, bucket_seconds, dialect).label("bucket")
    return (
        sa.select(
            p.arm,
            bucket,
            sa.func.count().label("users"),
            sa.func.sum(sa.case((p.y > 0, 1), else_=0)).label("conversions"),
        )
        .where(p.arm != _SEVERAL)
        .group_by(p.arm, bucket)
        .order_by(bucket, p.arm)
    )


def _sample(
    flag: str, metric: str, window: Window, arms: Sequence[str], by_arm: dict[str, Any]
) -> AbSample:
    rows = {
        arm: _Counts(int(row["n"]), int(row["conversions"] or 0)) for arm, row in by_arm.items()
    }
    several = rows.get(_SEVERAL_ARMS)
    return AbSample(
        flag=flag,
        metric=metric,
        window=window,
        arms={arm: _arm_stats(arm, rows.get(arm)) for arm in arms},
        users_in_several_arms=several.users if several else 0,
        first_exposure=_from_epoch(min((r["first_ts"] for r in by_arm.values()), default=None)),
        last_exposure=_from_epoch(max((r["last_ts"] for r in by_arm.values()), default=None)),
    )


@dataclass(frozen=True)
class _Point:
    arm: str
    bucket: int
    users: int
    conversions: int


@dataclass(frozen=True)
class _Counts:
    users: int
    conversions: int
