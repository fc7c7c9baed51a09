"""The decision document both reports end in, and the `decision.json` that carries it to `rollout`.

A decision names the flag, the analysis kind, the window, the arms compared, each check with its
statistic, p-value or interval and pass/fail, the recommendation (`ramp`, `hold`, `rollback`,
`ship` for the A/B report; `keep`, `investigate`, `rollback` for validation), the next rollout
step and the reasons in words.

`next_step` is the treatment's share of traffic (percent) to set after applying the decision:
the next ramp step for `ramp`, 0 for `rollback`, the current step for `hold` (null when it is
unknown) and the last step for `ship` (the treatment's bento becomes the flag's default).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RECOMMENDATIONS = ("ramp", "hold", "rollback", "ship")


@dataclass(frozen=True)
class Check:
    """One check in `decision.json`; `passed` says whether it, on its own, supports ramping."""

    name: str
    method: str
    estimate: float | None
    statistic: float | None
    p_value: float | None
    interval: tuple[float, float] | None
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)
    estimand: str | None = None  # the quantity `estimate`, `p_value` and `interval` are about


@dataclass(frozen=True)
class Decision:
    """The content of `decision.json` (see `to_dict` for its exact shape)."""

    flag: str
    kind: str
    metric: str
    window: dict[str, str | None]
    arms: list[dict[str, Any]]
    users_in_several_arms: int
    alpha: float
    checks: list[Check]
    recommendation: str
    current_step: float | None
    next_step: float | None
    reasons: list[str]
    summary: str
    generated_at: str
    missing: list[str] = field(default_factory=list)  # inputs or data the report lacked
    # A/B: how the primary metric was decided: the engine, the check that decided it and its
    # decisive p-value (after the correction across goal metrics), so a reader needs no rule.
    primary: dict[str, Any] = field(default_factory=dict)
    # A/B/n: the treatment arm the recommendation is about (None: no arm, or a two-arm test),
    # and each treatment's share of traffic (percent) when the report was made.
    arm: str | None = None
    arm_steps: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready `decision.json` document (NaN and infinities become null)."""
        document = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        return _json_safe(document)


def hold_for_missing(decision: Decision, problems: Sequence[str]) -> Decision:
    """`decision` turned into a hold that says exactly what is missing."""
    if not problems:
        return decision
    reasons = [f"missing: {p}" for p in problems] + ["hold until the data is there"]
    # What the data said regardless, so a reader sees e.g. a broken split as well.
    otherwise = f" Otherwise the data says: {decision.recommendation}, because " + "; ".join(
        decision.reasons
    )
    summary = (
        f"**HOLD** for `{decision.flag}`: the report cannot decide because data or inputs are "
        f"missing. {' '.join(f'Missing: {p}.' for p in problems)}"
        f"{otherwise if decision.reasons else ''}"
    )
    check = missing_inputs_check(problems)
    return replace(
        decision,
        recommendation="hold",
        next_step=decision.current_step,
        reasons=reasons,
        summary=summary,
        checks=[check, *decision.checks],
        missing=list(problems),
    )


def missing_inputs_check(problems: Sequence[str]) -> Check:
    """The failed `inputs` check that lists what a report could not find."""
    return Check(
        "inputs",
        "parameters and event store contents",
        None,
        None,
        None,
        None,
        False,
        {"missing": list(problems)},
    )


# A step within this many points counts as reached: weights have one decimal, so an arm of an
# A/B/n strategy ramped to 25% may serve 24.98% (service.flags.arm_moves).
STEP_TOLERANCE = 0.05


def next_ramp_step(current: float | None, steps: Sequence[float]) -> float | None:
    """The first step above `current` (the first step when unknown); None if at the last one."""
    if current is None:
        return steps[0]
    return next((s for s in steps if s > current + STEP_TOLERANCE), None)


def parse_ramp_steps(text: str | Sequence[float]) -> tuple[float, ...]:
    """`"5,25,50,100"` -> `(5, 25, 50, 100)`: increasing percentages in (0, 100]."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    steps = tuple(_number(float(s)) for s in raw if str(s).strip())
    if not steps or any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"ramp steps {text!r} must be increasing percentages")
    if steps[0] <= 0 or steps[-1] > 100:
        raise ValueError(f"ramp steps {text!r} must lie in (0, 100]")
    return steps


def write_decision(decision: Decision, directory: str | Path) -> Path:
    """Write `decision.json` into `directory` (created if missing) and return its path."""
    path = Path(directory) / "decision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decision.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def numbers(document: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a `decision.json` document, keyed by its path (for scrapbook glue).

    List items are keyed by their `name` or `role` when they have one (`checks.power.estimate`,
    `arms.control.users`), otherwise by position (`checks.difference.interval.0`).
    """
    found: dict[str, float] = {}
    if isinstance(document, bool) or document is None or isinstance(document, str):
        return found
    if isinstance(document, int | float):
        return {prefix: document}
    items: Any = document.items() if isinstance(document, dict) else enumerate(document)
    for key, value in items:
        if isinstance(value, dict) and ("name" in value or "role" in value):
            key = value.get("name", value.get("role"))
        found.update(numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def _pct(rate: float | None) -> str:
    return f"{rate:.1%}" if rate is not None else "n/a"


def _step(step: float | None) -> str:
    return f"{step:g}%" if step is not None else "unknown"


def _iso(moment: datetime | None) -> str | None:
    # Whole seconds: these bounds describe the data for a reader; the window itself is exact.
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _number(value: float) -> float:
    # Keep whole percentages as ints so decision.json says 50, not 50.0.
    return int(value) if value.is_integer() else value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
