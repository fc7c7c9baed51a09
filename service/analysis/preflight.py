"""Refuse a report that cannot answer its question, before any notebook runs.

A mistyped flag, arm, bento or metric, or a window that is impossible or misses every exposure
of the flag, would otherwise execute the whole notebook, exit 3 and leave a report folder and an
index row for nothing. These checks read what the event store holds (a few grouped counts over
the flag's exposures) and raise `ReportRefused` naming the value and the ones that exist.

Data that is merely thin (an arm without exposures in an otherwise valid window, too few users)
is not refused: that is a finding, and the report says so in a hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from service.analysis.ab_arms_checks import arm_problems
from service.analysis.ab_evidence import DecisionPolicy
from service.analysis.ab_group_sequential import LookPlan
from service.analysis.ab_test import parse_split
from service.analysis.queries import Window, known_metrics
from service.analysis.segment_queries import DIMENSION_COLUMNS, split_names
from service.errors import ReportRefused
from service.store.events import exposures

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # flag names, and safe paths
_DIMENSION = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_LISTED = 20  # names listed in a refusal at most


@dataclass(frozen=True)
class Served:
    """What the store holds for one flag: its exposures per variant and bento, and when."""

    variant: str
    bento: str | None
    shadow: bool
    exposures: int
    first_ts: float
    last_ts: float


def check_ab_inputs(engine: sa.Engine, params: dict[str, Any]) -> list[Served]:
    """Refuse an A/B report whose flag, arms, metrics, dimensions or window the store lacks.

    Returns the flag's inventory (the runner links each arm's bento to its model card).
    """
    flag = _checked_flag(params["flag"])
    window = _checked_window(params.get("window_start"), params.get("window_end"))
    served = inventory(engine, flag)
    live = [s for s in served if not s.shadow]
    variants = sorted({s.variant for s in live})
    treatments = split_names(params.get("treatment")) or [str(params.get("treatment"))]
    for role, arm in [("control", params.get("control")), *(("treatment", t) for t in treatments)]:
        if arm not in variants:
            raise ReportRefused(
                f"{role} arm {arm!r} was never served by flag {flag!r}; "
                f"its variants: {_names(variants)}"
            )
    _check_options(params, [params.get("control"), *treatments])
    _check_overlap(flag, window, live)
    metrics = [params.get("metric"), *split_names(params.get("goal_metrics"))]
    _check_metrics(engine, [m for m in metrics if m])
    check_dimensions(engine, flag, split_names(params.get("dimensions")))
    return served


def check_validation_inputs(engine: sa.Engine, params: dict[str, Any]) -> list[Served]:
    """Refuse a validation report whose flag, bentos, metric or window the store lacks."""
    flag = _checked_flag(params["flag"])
    window = _checked_window(params.get("window_start"), params.get("window_end"))
    served = inventory(engine, flag)
    bentos = sorted({s.bento for s in served if s.bento})
    # `previous` is not refused: the version replaced may have left the store (pruned, or
    # replaced before logging began); the report then says it has nothing to compare with.
    tag = params.get("bento")
    if tag not in bentos:
        raise ReportRefused(
            f"bento {tag!r} never served flag {flag!r}; its bentos: {_names(bentos)}"
        )
    _check_overlap(flag, window, [s for s in served if s.bento == params.get("bento")])
    _check_metrics(engine, [params["metric"]] if params.get("metric") else [])
    return served


def inventory(engine: sa.Engine, flag: str) -> list[Served]:
    """The flag's exposures per (variant, bento, shadow); refused when it has none at all."""
    e = exposures.c
    query = (
        sa.select(
            e.variant,
            e.bento,
            e.shadow,
            sa.func.count().label("n"),
            sa.func.min(e.ts).label("first_ts"),
            sa.func.max(e.ts).label("last_ts"),
        )
        .where(e.flag == flag, e.user_id.is_not(None))
        .group_by(e.variant, e.bento, e.shadow)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        with engine.connect() as conn:
            flags = [r.flag for r in conn.execute(sa.select(e.flag).distinct().order_by(e.flag))]
        raise ReportRefused(
            f"flag {flag!r} has no exposures in the event store; flags with exposures: "
            f"{_names(flags)}"
        )
    return [
        Served(r.variant, r.bento, bool(r.shadow), int(r.n), float(r.first_ts), float(r.last_ts))
        for r in rows
    ]


def check_dimensions(engine: sa.Engine, flag: str, dimensions: Sequence[str]) -> None:
    """Each drill-down dimension must be `segment`, `region` or a property some exposure of the
    flag carries (a mistyped name would otherwise give one slice called "(none)")."""
    for name in dimensions:
        if name in DIMENSION_COLUMNS:
            continue
        if not _DIMENSION.match(name):
            raise ReportRefused(
                f"dimension {name!r} must be a context field name (letters, digits, '_', '-')"
            )
        carried = (
            sa.select(sa.literal(1))
            .where(exposures.c.flag == flag, exposures.c.properties[name].as_string().is_not(None))
            .limit(1)
        )
        with engine.connect() as conn:
            if conn.execute(carried).first() is None:
                raise ReportRefused(
                    f"dimension {name!r} is in no exposure of flag {flag!r}; use segment, region "
                    "or a context property the selector logs"
                )


def _check_options(params: dict[str, Any], arms: list[Any]) -> None:
    """Options that cannot work together, refused before the notebook runs: the expected split
    needs one weight per arm; A/B/n has its own engines; group-sequential needs its looks."""
    try:
        parse_split(params.get("expected_split"), [str(a) for a in arms])
    except ValueError as exc:
        raise ReportRefused(f"--expected-split: {exc}") from None
    engine = "sequential" if params.get("sequential") else params.get("engine") or "frequentist"
    if len(arms) > 2 and not str(params.get("expected_split") or "").strip():
        # Guessing equal shares would hold every report on a sample ratio "mismatch" that is
        # only the guess: arms of different strategies (a segment's canary) are not split 1:1.
        raise ReportRefused(
            f"--expected-split: an A/B/n report needs the split between "
            f"{', '.join(str(a) for a in arms)}; the flag gives it only when every arm is a "
            "variant of its ramp strategy and that strategy alone assigns them"
        )
    if len(arms) > 2:
        policy = DecisionPolicy(engine=engine)
        goals = split_names(params.get("goal_metrics"))
        problems = arm_problems([str(a) for a in arms[1:]], policy, goals)
        if problems:
            raise ReportRefused(problems[0])
    if engine == "group-sequential":
        looks = 5 if params.get("looks") is None else params["looks"]
        plan = LookPlan(looks, params.get("look"), params.get("planned_users"))
        if plan.problems():
            raise ReportRefused(plan.problems()[0])


def _checked_flag(flag: Any) -> str:
    if not isinstance(flag, str) or not SAFE_NAME.match(flag):
        raise ReportRefused(f"flag name {flag!r} must be letters, digits, '.', '_' or '-'")
    return flag


def _checked_window(start: Any, end: Any) -> Window:
    try:
        return Window.parse(start, end)
    except (TypeError, ValueError) as exc:
        raise ReportRefused(f"window: {exc} (times are ISO 8601, the end exclusive)") from None


def _check_overlap(flag: str, window: Window, served: Sequence[Served]) -> None:
    if not served or (window.start is None and window.end is None):
        return
    first, last = min(s.first_ts for s in served), max(s.last_ts for s in served)
    after_start = window.start is None or last >= window.start.timestamp()
    before_end = window.end is None or first < window.end.timestamp()
    if not (after_start and before_end):
        span = window.to_dict()
        raise ReportRefused(
            f"window [{span['start'] or 'beginning'}, {span['end'] or 'now'}) holds no exposure "
            f"of flag {flag!r}; its exposures span {_iso(first)} to {_iso(last)}"
        )


def _check_metrics(engine: sa.Engine, metrics: Iterable[str]) -> None:
    wanted = list(metrics)
    if not wanted:
        return
    known = known_metrics(engine)
    for metric in wanted:
        if metric not in known:
            raise ReportRefused(
                f"metric {metric!r} has no outcomes in the event store; metrics: {_names(known)}"
            )


def _names(names: Sequence[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
