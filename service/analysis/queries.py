"""From the event store to per-arm sufficient statistics, aggregated in SQL.

The unit of analysis is the user. A user's arm is the variant of their (non-shadow) exposures
to the flag; users exposed to more than one of the compared arms are contaminated, so they are
counted and left out. A user converts on a metric when an outcome with that metric and a
positive value joins one of their exposures of the flag: by request id, or, for outcomes logged
without a request id, by user id and flag at or after that exposure.

Only counts leave the database, never raw rows, so a report over millions of exposures moves a
handful of numbers. The queries are SQLAlchemy Core and run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from service.analysis.stats import MomentStats, ProportionStats
from service.store.events import exposures, outcomes

DAY_SECONDS = 86_400
# The arm key of users seen in more than one compared arm; never a valid variant name because
# variant names come from Unleash, which does not allow angle brackets.
_SEVERAL_ARMS = "<several>"


@dataclass(frozen=True)
class Window:
    """A half-open time window `[start, end)` on exposure time; None means unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(cls, start: str | datetime | None, end: str | datetime | None) -> Window:
        """Build a window from ISO 8601 strings or datetimes; naive times are taken as UTC."""
        window = cls(_to_utc(start), _to_utc(end))
        if window.start and window.end and window.start >= window.end:
            raise ValueError(f"window start {start} is not before its end {end}")
        return window

    def to_dict(self) -> dict[str, str | None]:
        """`{"start": ISO or None, "end": ISO or None}`."""
        return {"start": _iso(self.start), "end": _iso(self.end)}


@dataclass(frozen=True)
class AbSample:
    """Per-arm users and conversions of one flag and metric over a window."""

    flag: str
    metric: str
    window: Window
    arms: dict[str, ProportionStats]  # in the order the arms were asked for
    users_in_several_arms: int  # excluded from `arms`
    first_exposure: datetime | None
    last_exposure: datetime | None

    @property
    def exposed_users(self) -> int:
        """Users counted in some arm (contaminated users excluded)."""
        return sum(arm.users for arm in self.arms.values())


@dataclass(frozen=True)
class CumulativePoint:
    """Users first exposed up to the end of `bucket_start`'s bucket, and how many converted."""

    bucket_start: datetime
    arm: str
    users: int
    conversions: int


def ab_sample(
    engine: sa.Engine,
    *,
    flag: str,
    arms: Sequence[str],
    metric: str,
    window: Window | None = None,
) -> AbSample:
    """Users and converting users per arm for `flag` and `metric` (see the module docstring)."""
    window = window or Window()
    user_arms, converted = _user_arms(flag, arms, metric, window)
    query = (
        sa.select(
            user_arms.c.arm,
            sa.func.count().label("users"),
            sa.func.count(converted.c.user_id).label("conversions"),
            sa.func.min(user_arms.c.first_ts).label("first_ts"),
            sa.func.max(user_arms.c.last_ts).label("last_ts"),
        )
        .select_from(user_arms.outerjoin(converted, converted.c.user_id == user_arms.c.user_id))
        .group_by(user_arms.c.arm)
    )
    rows = {row.arm: row for row in _read(engine, query)}
    return AbSample(
        flag=flag,
        metric=metric,
        window=window,
        arms={arm: _arm_stats(arm, rows.get(arm)) for arm in arms},
        users_in_several_arms=rows[_SEVERAL_ARMS].users if _SEVERAL_ARMS in rows else 0,
        first_exposure=_from_epoch(min((r.first_ts for r in rows.values()), default=None)),
        last_exposure=_from_epoch(max((r.last_ts for r in rows.values()), default=None)),
    )


def cumulative_by_bucket(
    engine: sa.Engine,
    *,
    flag: str,
    arms: Sequence[str],
    metric: str,
    window: Window | None = None,
    bucket_seconds: int = DAY_SECONDS,
) -> list[CumulativePoint]:
    """Cumulative users and conversions per arm by bucket of each user's first exposure.

    Users are cohorted by first exposure and their conversion counts whenever it happened, so
    the last point of each arm equals `ab_sample`'s count. Buckets are aligned to the epoch
    (days start at 00:00 UTC). Only buckets in which some user was first exposed appear.
    """
    user_arms, converted = _user_arms(flag, arms, metric, window or Window())
    bucket = _floor_div(user_arms.c.first_ts, bucket_seconds, engine.dialect.name).label("bucket")
    query = (
        sa.select(
            user_arms.c.arm,
            bucket,
            sa.func.count().label("users"),
            sa.func.count(converted.c.user_id).label("conversions"),
        )
        .select_from(user_arms.outerjoin(converted, converted.c.user_id == user_arms.c.user_id))
        .where(user_arms.c.arm != _SEVERAL_ARMS)
        .group_by(user_arms.c.arm, bucket)
        .order_by(bucket)
    )
    return _accumulate(_read(engine, query), bucket_seconds)


def metric_moments(
    engine: sa.Engine,
    *,
    flag: str,
    arms: Sequence[str],
    metric: str,
    window: Window | None = None,
    binary: bool = False,
) -> dict[str, MomentStats]:
    """Per arm: users, and sums of each user's metric total `y` and pre-exposure total `x`.

    `binary=True` makes both per-user values "converted or not" (1 when some outcome of the
    metric has a positive value, as `ab_sample` counts a conversion), so a CUPED test of the
    primary metric tests the same quantity as the two-proportion test.

    `y` sums the values of the metric's outcomes joined to the user's exposures (as for
    conversions); `x` sums the user's outcomes of the same metric logged before their first
    exposure to this flag ever (not only in the window), the covariate CUPED needs. Users
    without outcomes count with 0. Users in several arms are left out.
    """
    _check_arms(arms)
    exposed = _exposed(flag, arms, window or Window())
    user_arms = _arms_of_users(exposed)
    post, pre = _metric_values(exposed, user_arms, flag, metric)
    if binary:
        y: Any = sa.case((post.c.y_max > 0, 1.0), else_=0.0)
        x: Any = sa.case((pre.c.x_max > 0, 1.0), else_=0.0)
    else:
        y, x = sa.func.coalesce(post.c.y, 0.0), sa.func.coalesce(pre.c.x, 0.0)
    query = (
        sa.select(user_arms.c.arm, sa.func.count().label("n"), *_moment_columns(y, x))
        .select_from(
            user_arms.outerjoin(post, post.c.user_id == user_arms.c.user_id).outerjoin(
                pre, pre.c.user_id == user_arms.c.user_id
            )
        )
        .where(user_arms.c.arm != _SEVERAL_ARMS)
        .group_by(user_arms.c.arm)
    )
    rows = {row.arm: row for row in _read(engine, query)}
    return {arm: _moments(arm, rows.get(arm)) for arm in arms}


# Guardrails measured on the exposures themselves: name -> (numerator, denominator) per user.
GUARDRAIL_COLUMNS: dict[str, tuple[str, str]] = {
    "error_rate": ("errors", "requests"),
    "fallback_rate": ("fallbacks", "requests"),
    "latency_ms": ("latency_sum", "latency_count"),
}


def guardrail_moments(
    engine: sa.Engine,
    *,
    flag: str,
    arms: Sequence[str],
    window: Window | None = None,
) -> dict[str, dict[str, MomentStats]]:
    """Per guardrail and arm, the per-user sums a delta-method ratio test needs.

    Each guardrail is a ratio over a user's requests (errors per request: status >= 500;
    fallbacks per request; mean latency per request that reported one), so the user stays the
    unit of analysis even though users send many requests.
    """
    _check_arms(arms)
    exposed = _exposed(flag, arms, window or Window())
    per_user = (
        sa.select(
            sa.func.min(exposed.c.variant).label("arm"),
            sa.func.count().label("requests"),
            sa.func.sum(exposed.c.error).label("errors"),
            sa.func.sum(exposed.c.fallback).label("fallbacks"),
            sa.func.coalesce(sa.func.sum(exposed.c.latency_ms), 0.0).label("latency_sum"),
            sa.func.count(exposed.c.latency_ms).label("latency_count"),
        )
        .group_by(exposed.c.user_id)
        .having(sa.func.min(exposed.c.variant) == sa.func.max(exposed.c.variant))
        .subquery("per_user")
    )
    columns = [sa.func.count().label("n")]
    for name, (num, den) in GUARDRAIL_COLUMNS.items():
        columns += _moment_columns(per_user.c[num], per_user.c[den], prefix=f"{name}_")
    query = sa.select(per_user.c.arm, *columns).group_by(per_user.c.arm)
    rows = {row.arm: row._mapping for row in _read(engine, query)}
    return {
        name: {arm: _moments(arm, rows.get(arm), prefix=f"{name}_") for arm in arms}
        for name in GUARDRAIL_COLUMNS
    }


def known_metrics(engine: sa.Engine) -> list[str]:
    """Every metric name that has at least one outcome, sorted."""
    query = sa.select(outcomes.c.metric).distinct().order_by(outcomes.c.metric)
    with engine.connect() as conn:
        return [row.metric for row in conn.execute(query)]


def bucket_seconds_for(first: datetime | None, last: datetime | None, buckets: int = 20) -> int:
    """A bucket width giving about `buckets` points over `[first, last]`, rounded to a
    readable unit (1, 5, 10, 30 s; 1, 5, 15, 30 min; 1, 3, 6, 12 h; 1 day); 1 day if unknown."""
    if first is None or last is None or last <= first:
        return DAY_SECONDS
    wanted = (last - first).total_seconds() / buckets
    return next((unit for unit in _READABLE_BUCKETS if unit >= wanted), DAY_SECONDS)


_READABLE_BUCKETS = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 10_800, 21_600, 43_200, DAY_SECONDS)


def _metric_values(
    exposed: sa.CTE, user_arms: sa.CTE, flag: str, metric: str
) -> tuple[sa.Subquery, sa.Subquery]:
    o = outcomes.c
    by_request = (
        sa.select(exposed.c.user_id, o.value)
        .select_from(exposed.join(outcomes, o.request_id == exposed.c.request_id))
        .where(o.metric == metric)
    )
    by_user = (
        sa.select(user_arms.c.user_id, o.value)
        .select_from(user_arms.join(outcomes, o.user_id == user_arms.c.user_id))
        .where(
            o.metric == metric, o.flag == flag, o.request_id.is_(None), o.ts >= user_arms.c.first_ts
        )
    )
    values = sa.union_all(by_request, by_user).subquery("metric_values")
    post = (
        sa.select(
            values.c.user_id,
            sa.func.sum(values.c.value).label("y"),
            sa.func.max(values.c.value).label("y_max"),
        )
        .group_by(values.c.user_id)
        .subquery("post")
    )
    # CUPED's covariate must be untouched by the experiment: before the user's first exposure
    # to this flag ever, not just in the window (an earlier exposure's outcome is itself an
    # effect of the treatment, and would absorb the very difference being measured).
    first_ever = (
        sa.select(exposures.c.user_id, sa.func.min(exposures.c.ts).label("first_ts"))
        .where(exposures.c.flag == flag, sa.not_(exposures.c.shadow))
        .group_by(exposures.c.user_id)
        .subquery("first_ever")
    )
    pre = (
        sa.select(
            user_arms.c.user_id,
            sa.func.sum(o.value).label("x"),
            sa.func.max(o.value).label("x_max"),
        )
        .select_from(
            user_arms.join(first_ever, first_ever.c.user_id == user_arms.c.user_id).join(
                outcomes, o.user_id == user_arms.c.user_id
            )
        )
        .where(o.metric == metric, o.ts < first_ever.c.first_ts)
        .group_by(user_arms.c.user_id)
        .subquery("pre")
    )
    return post, pre


def _moment_columns(y: Any, x: Any, prefix: str = "") -> list[Any]:
    return [
        sa.func.sum(y).label(f"{prefix}sum_y"),
        sa.func.sum(y * y).label(f"{prefix}sum_y2"),
        sa.func.sum(x).label(f"{prefix}sum_x"),
        sa.func.sum(x * x).label(f"{prefix}sum_x2"),
        sa.func.sum(x * y).label(f"{prefix}sum_xy"),
    ]


def _moments(arm: str, row: Any, prefix: str = "") -> MomentStats:
    if row is None:
        return MomentStats(arm, 0, 0.0, 0.0)
    values = row if hasattr(row, "get") else row._mapping

    def total(name: str) -> float:
        return float(values.get(f"{prefix}{name}") or 0.0)

    return MomentStats(
        arm,
        int(values.get("n")),
        total("sum_y"),
        total("sum_y2"),
        total("sum_x"),
        total("sum_x2"),
        total("sum_xy"),
    )


def _read(engine: sa.Engine, query: sa.Select[Any]) -> Sequence[sa.Row[Any]]:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # These queries read every exposure of the flag, which hash joins do well. Right
            # after a bulk load PostgreSQL's statistics are missing, it expects one row per
            # CTE and picks nested loops that take minutes instead of milliseconds (measured:
            # 20 s vs 0.1 s at 20,000 users). SET LOCAL lasts only for this read-only transaction.
            conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
            # Per-user aggregates of millions of exposures: in memory, not sorted on disk.
            conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        return conn.execute(query).all()


def _user_arms(
    flag: str, arms: Sequence[str], metric: str, window: Window
) -> tuple[sa.CTE, sa.CTE]:
    """CTEs: one row per exposed user with their arm, and the set of converting users."""
    _check_arms(arms)
    exposed = _exposed(flag, arms, window)
    user_arms = _arms_of_users(exposed)
    return user_arms, _converted(exposed, user_arms, flag, metric)


def _check_arms(arms: Sequence[str]) -> None:
    if len(set(arms)) != len(arms) or len(arms) < 2:
        raise ValueError(f"need at least two distinct arms to compare, got {list(arms)}")


def _arms_of_users(exposed: sa.CTE) -> sa.CTE:
    """One row per exposed user: their arm (or the several-arms marker), first and last time."""
    # min <> max rather than count(DISTINCT variant) > 1: the same test, but a DISTINCT
    # aggregate makes PostgreSQL sort every exposure by user, where this one hashes.
    first, last = sa.func.min(exposed.c.variant), sa.func.max(exposed.c.variant)
    return (
        sa.select(
            exposed.c.user_id,
            sa.case((first != last, sa.literal(_SEVERAL_ARMS)), else_=first).label("arm"),
            sa.func.min(exposed.c.ts).label("first_ts"),
            sa.func.max(exposed.c.ts).label("last_ts"),
        )
        .group_by(exposed.c.user_id)
        .cte("user_arms")
    )


def arm_exposure_conditions(flag: str, arms: Sequence[str], window: Window) -> list[Any]:
    """The exposures that count for an arm of `flag` in `window`."""
    e = exposures.c
    # Shadow exposures were served to nobody, and exposures without a user id cannot be
    # attributed to a unit, so neither belongs to an arm.
    conditions = [
        e.flag == flag,
        e.variant.in_(list(arms)),
        sa.not_(e.shadow),
        e.user_id.is_not(None),
    ]
    if window.start is not None:
        conditions.append(e.ts >= window.start.timestamp())
    if window.end is not None:
        conditions.append(e.ts < window.end.timestamp())
    return conditions


def request_hits(metric: str) -> sa.Subquery:
    """Per request id, the best value of `metric` logged for it (`best` > 0: it converted)."""
    o = outcomes.c
    return (
        sa.select(o.request_id, sa.func.max(o.value).label("best"))
        .where(o.metric == metric, o.request_id.is_not(None))
        .group_by(o.request_id)
        .subquery("hits")
    )


def exposure_columns() -> list[Any]:
    """Per exposure: the unit, its arm, the request (to join outcomes), when, and how it went."""
    e = exposures.c
    return [
        e.user_id,
        e.variant,
        e.request_id,
        e.ts,
        sa.case((e.status >= 500, 1), else_=0).label("error"),
        sa.case((e.fallback, 1), else_=0).label("fallback"),
        e.latency_ms,
    ]


def _exposed(flag: str, arms: Sequence[str], window: Window) -> sa.CTE:
    return (
        sa.select(*exposure_columns())
        .where(*arm_exposure_conditions(flag, arms, window))
        .cte("exposed")
    )


def _converted(exposed: sa.CTE, user_arms: sa.CTE, flag: str, metric: str) -> sa.CTE:
    o = outcomes.c
    hit = [o.metric == metric, o.value > 0]
    by_request = (
        sa.select(exposed.c.user_id)
        .select_from(exposed.join(outcomes, o.request_id == exposed.c.request_id))
        .where(*hit)
    )
    # Outcomes without a request id join on user and flag; one that happened before the user
    # was first exposed cannot have been caused by the variant, so it does not count. Joining
    # one row per user (not every exposure) also keeps PostgreSQL off a quadratic nested loop
    # when its statistics are stale, e.g. right after a bulk load.
    by_user = (
        sa.select(user_arms.c.user_id)
        .select_from(user_arms.join(outcomes, o.user_id == user_arms.c.user_id))
        .where(*hit, o.flag == flag, o.request_id.is_(None), o.ts >= user_arms.c.first_ts)
    )
    # UNION (not UNION ALL) de-duplicates: a user converts once however many outcomes match.
    return sa.union(by_request, by_user).cte("converted")


def _floor_div(ts: Any, seconds: int, dialect: str) -> Any:
    # SQLite may be built without floor(); casting truncates, which is floor for ts >= 0.
    # PostgreSQL's cast rounds instead, so it gets floor().
    if dialect == "sqlite":
        return sa.cast(ts / seconds, sa.Integer)
    return sa.func.floor(ts / seconds)


def _accumulate(rows: Sequence[Any], bucket_seconds: int) -> list[CumulativePoint]:
    totals: dict[str, tuple[int, int]] = {}
    points = []
    for row in rows:  # ordered by bucket
        users, conversions = totals.get(row.arm, (0, 0))
        totals[row.arm] = (users + row.users, conversions + row.conversions)
        start = datetime.fromtimestamp(int(row.bucket) * bucket_seconds, UTC)
        points.append(CumulativePoint(start, row.arm, *totals[row.arm]))
    return points


def _arm_stats(arm: str, row: Any) -> ProportionStats:
    if row is None:
        return ProportionStats(arm, 0, 0)
    return ProportionStats(arm, int(row.users), int(row.conversions))


def _to_utc(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _from_epoch(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
