"""The Rollouts page's model: per flag and environment, who is served which bento, and why.

Pure reading, no Flask: flag documents (service.flags.documents' shape, from flags/ or Unleash),
the ramp schedule from flags/, the guard's last status file (`<data>/guard/<flag>.json`, what
`rollout guard status` prints), pending promotions from the audit table, and the newest A/B and
validation decision under reports/<flag>/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.config import Settings
from service.errors import RolloutError
from service.flags.audit import STATE_ACTIONS, AuditStore
from service.flags.model import FlagDefinition, RampSchedule, Segment
from service.flags.ramp import Doc, current_step
from service.rollout.decisions import APPROVED, PENDING

STEP_TOLERANCE = 0.05
# What the operator (or the guard) does next, by the guard's state.
NEXT_ACTION = {
    "paused": "waits for a person: resume the guard to let it act again",
    "pending": "waits for a person: approve the promotion",
    "holding": "keeps watching; promotes once the step has baked",
    "idle": "nothing to guard: the canary serves nobody",
    "error": "retries with back-off",
    "ramped": "watches the new step",
    "shipped": "nothing: the treatment is the new default",
    "rolled-back": "nothing until someone ramps again",
}


@dataclass(frozen=True)
class VariantShare:
    variant: str
    weight: float
    share: float  # percent of the environment's users: rollout x weight
    bento: str


@dataclass(frozen=True)
class StrategyView:
    name: str
    rollout: float
    stickiness: str
    constraints: list[str]
    segments: list[tuple[str, list[str]]]  # segment name, its constraints in words
    variants: list[VariantShare]
    ramps: bool  # the strategy the ramp schedule moves


@dataclass(frozen=True)
class EnvironmentView:
    name: str
    enabled: bool
    strategies: list[StrategyView]


@dataclass(frozen=True)
class StepView:
    step: float
    state: str  # done | current | next | later


@dataclass(frozen=True)
class RampView:
    environment: str
    strategy: str
    control: str
    treatment: str
    current: float | None
    steps: list[StepView]
    approval: bool
    bake_seconds: float
    min_users: int


@dataclass(frozen=True)
class GuardView:
    state: str
    step: float | None
    message: str
    time: str
    age_seconds: float | None
    next_action: str
    checks: list[dict[str, Any]]


@dataclass(frozen=True)
class PendingView:
    what: str
    why: str
    since: str
    proposal: dict[str, Any]


@dataclass(frozen=True)
class DecisionView:
    kind: str
    recommendation: str
    generated_at: str
    summary: str
    reasons: list[str]
    next_step: Any
    link: str  # path under reports/


@dataclass
class FlagView:
    name: str
    description: str
    stable: str  # the flag's default bento: the family's stable version
    variants: dict[str, str]
    shadows: list[str]
    environments: list[EnvironmentView]
    ramp: RampView | None = None
    guard: GuardView | None = None
    pending: PendingView | None = None
    decisions: list[DecisionView] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def flag_view(
    doc: Doc,
    definition: FlagDefinition | None,
    segments: dict[str, Segment],
    settings: Settings,
) -> FlagView:
    """Everything the Rollouts page shows for one flag."""
    schedule = definition.ramp if definition else None
    view = FlagView(
        name=str(doc["flag"]),
        description=str(doc.get("description") or ""),
        stable=str(doc.get("default") or ""),
        variants=dict(doc.get("variants") or {}),
        shadows=list(doc.get("shadows") or []),
        environments=[
            _environment(name, env, doc, segments, schedule)
            for name, env in (doc.get("environments") or {}).items()
        ],
    )
    if schedule is not None:
        try:
            view.ramp = ramp_view(doc, schedule)
        except RolloutError as exc:
            view.problems.append(f"ramp: {exc.message}")
    view.guard = guard_view(settings.data_dir / "guard" / f"{view.name}.json")
    view.decisions = latest_decisions(settings.reports_dir, view.name)
    return view


def _environment(
    name: str, env: Doc, doc: Doc, segments: dict[str, Segment], schedule: RampSchedule | None
) -> EnvironmentView:
    strategies = []
    for raw in env.get("strategies") or []:
        rollout = float(raw.get("rollout", 100))
        variants = [
            VariantShare(
                variant,
                float(weight),
                round(rollout * float(weight) / 100, 3),
                str((doc.get("variants") or {}).get(variant, "")),
            )
            for variant, weight in (raw.get("variants") or {}).items()
        ]
        strategies.append(
            StrategyView(
                name=str(raw.get("name")),
                rollout=rollout,
                stickiness=str(raw.get("stickiness") or "default"),
                constraints=[constraint_text(c) for c in raw.get("constraints") or []],
                segments=[
                    (s, [constraint_text(_constraint_doc(c)) for c in segments[s].constraints])
                    if s in segments
                    else (s, ["(not declared in flags/context.yaml)"])
                    for s in raw.get("segments") or []
                ],
                variants=variants,
                ramps=bool(
                    schedule and schedule.environment == name and schedule.strategy == raw["name"]
                ),
            )
        )
    return EnvironmentView(name, bool(env.get("enabled")), strategies)


def _constraint_doc(constraint: Any) -> Doc:
    return {
        "field": constraint.field,
        "operator": constraint.operator,
        "values": list(constraint.values),
        "inverted": constraint.inverted,
    }


def constraint_text(constraint: Doc) -> str:
    """`region NOT_IN eu, us` (with `not` in front when inverted)."""
    values = ", ".join(str(v) for v in constraint.get("values") or [])
    prefix = "not " if constraint.get("inverted") else ""
    return f"{prefix}{constraint.get('field')} {constraint.get('operator')} {values}".strip()


def ramp_view(doc: Doc, schedule: RampSchedule) -> RampView:
    """The schedule with each step marked done, current, next or later."""
    current = current_step(doc, schedule)
    steps: list[StepView] = []
    marked_next = False
    for step in schedule.steps:
        if abs(step - current) <= STEP_TOLERANCE:
            state = "current"
        elif step < current:
            state = "done"
        elif not marked_next:
            state, marked_next = "next", True
        else:
            state = "later"
        steps.append(StepView(step, state))
    if current > 0 and not any(s.state == "current" for s in steps):
        # Between two steps (set by hand, or the flag's starting point): show where it is.
        steps.append(StepView(current, "current"))
        steps.sort(key=lambda s: s.step)
    return RampView(
        schedule.environment,
        schedule.strategy,
        schedule.control,
        schedule.treatment,
        current,
        steps,
        schedule.approval,
        schedule.bake_seconds,
        schedule.min_users,
    )


def guard_view(path: Path, now: float | None = None) -> GuardView | None:
    """The guard's last tick, from its status file; None when no guard ever ran."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    state = str(raw.get("state", "unknown"))
    when = str(raw.get("time", ""))
    try:
        age = (now or datetime.now(UTC).timestamp()) - datetime.fromisoformat(when).timestamp()
    except ValueError:
        age = None
    return GuardView(
        state=state,
        step=raw.get("step"),
        message=str(raw.get("message", "")),
        time=when,
        age_seconds=age,
        next_action=NEXT_ACTION.get(state, ""),
        checks=list(raw.get("checks") or []),
    )


def pending_view(store: AuditStore, server: str, flag: str) -> PendingView | None:
    """The guard's promotion waiting for approval (a later change cancels it)."""
    rows = store.history(server, flag)
    latest = next(
        (r for r in reversed(rows) if r.action in (PENDING, APPROVED, *STATE_ACTIONS)), None
    )
    if latest is None or latest.action != PENDING:
        return None
    return PendingView(
        latest.what,
        latest.why,
        datetime.fromtimestamp(latest.ts, UTC).isoformat(timespec="seconds"),
        dict((latest.evidence or {}).get("proposal") or {}),
    )


def latest_decisions(reports_dir: Path, flag: str) -> list[DecisionView]:
    """The newest decision of each kind (ab, validation) under reports/<flag>/."""
    newest: dict[str, DecisionView] = {}
    for path in sorted((reports_dir / flag).glob("*/decision.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict):
            continue
        kind = str(raw.get("kind") or "unknown")
        html = path.parent / "report.html"
        view = DecisionView(
            kind=kind,
            recommendation=str(raw.get("recommendation", "")),
            generated_at=str(raw.get("generated_at", "")),
            summary=str(raw.get("summary") or ""),
            reasons=[str(r) for r in raw.get("reasons") or []],
            next_step=raw.get("next_step"),
            link=(html if html.exists() else path).relative_to(reports_dir).as_posix(),
        )
        if kind not in newest or view.generated_at >= newest[kind].generated_at:
            newest[kind] = view
    return [newest[k] for k in sorted(newest)]


def rollouts(
    docs: dict[str, Doc],
    definitions: dict[str, FlagDefinition],
    flag_set_segments: dict[str, Segment],
    problems: dict[str, list[str]],
    store: AuditStore,
    server: str,
    settings: Settings,
) -> list[FlagView]:
    """Every flag's view, by name."""
    views = []
    for name in sorted(docs):
        view = flag_view(docs[name], definitions.get(name), flag_set_segments, settings)
        view.problems = problems.get(name, []) + view.problems
        view.pending = pending_view(store, server, name)
        views.append(view)
    return views
