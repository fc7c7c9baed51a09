"""Decisions feed flags: `rollout decide apply`, `rollout decide approve`.

A report's `decision.json` is checked against the flag before anything is written: it must be
for this flag, name arms the flag has, be newer than the flag's last change and have been made
at the step the flag is at now (a ramp only ever climbs). Then the move (service.flags.ramp) is
written to the flag's home (service.flags.state), flags/ is edited to match, the flag's evidence
link points at the report, the audit table records who, what, why and the evidence, and the
webhook hears about it. `hold`, `keep` and `investigate` change nothing.

A validation decision (kind `validation`) is about one bento: its `rollback` takes the ramp's
treatment to 0% when that bento is the canary, and otherwise puts the whole flag back on the
version it replaced (`previous`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from service.analysis.decision import STEP_TOLERANCE  # a decision made at 40% applies at 40%
from service.config import Settings
from service.errors import RolloutError, UnknownFlag
from service.flags.arm_moves import arm_steps, arms_split, move_arm
from service.flags.audit import DECIDE, STATE_ACTIONS, AuditStore
from service.flags.definitions import load_flags
from service.flags.model import FlagDefinition, FlagSet, RampSchedule
from service.flags.ramp import (
    Doc,
    Move,
    RampError,
    current_step,
    expected_split,
    move,
    retarget,
    treatment_bento,
)
from service.flags.state import FlagLocation
from service.flags.unleash_admin import UnleashAdmin
from service.registry.gates import NOT_BUILT, NOT_GATED, failed_gates
from service.registry.stable import promote
from service.rollout.notify import Notification, Notifier

log = logging.getLogger(__name__)
EVIDENCE_LINK_TITLE = "rollout: evidence of the last change"

# What each recommendation does to the flag; anything else (hold, keep, investigate) nothing.
MOVES = {"ramp": "ramp", "ship": "ship", "rollback": "rollback"}
HOLDS = ("hold", "keep", "investigate")
# Audit actions of the guard's own bookkeeping (the flag is not changed by these).
PAUSED, RESUMED, PENDING, APPROVED = "paused", "resumed", "pending-promotion", "approved"


class DecisionRefused(RolloutError):
    """The decision file is malformed, stale, or for another flag or other arms."""

    code = "decision_refused"


@dataclass(frozen=True)
class DecisionFile:
    """The parts of a `decision.json` that applying it depends on."""

    path: Path
    flag: str
    kind: str
    recommendation: str
    current_step: float | None
    next_step: float | None
    arms: tuple[str, ...]
    generated_at: float  # epoch seconds
    reasons: tuple[str, ...] = ()
    summary: str = ""
    bento: str | None = None  # validation: the version under validation (role `live`)
    previous: str | None = None  # validation: the version it replaced (role `previous`)
    arm: str | None = None  # A/B/n: the treatment arm the recommendation is about

    @classmethod
    def load(cls, path: Path) -> DecisionFile:
        """Parse and check the fields; DecisionRefused naming the file and field otherwise."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecisionRefused(f"{path}: not a readable JSON decision ({exc})") from exc
        if not isinstance(raw, dict):
            raise DecisionRefused(f"{path}: a decision is a JSON object")
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> DecisionFile:
        def need(name: str, kind: type | tuple[type, ...]) -> Any:
            value = raw.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DecisionRefused(f"{path}: field '{name}' is missing or not a valid value")
            return value

        recommendation = need("recommendation", str)
        if recommendation not in (*MOVES, *HOLDS):
            raise DecisionRefused(
                f"{path}: field 'recommendation' is {recommendation!r}, not one of "
                f"{', '.join((*MOVES, *HOLDS))}"
            )
        try:
            generated = datetime.fromisoformat(need("generated_at", str).replace("Z", "+00:00"))
        except ValueError as exc:
            raise DecisionRefused(f"{path}: field 'generated_at' is not an ISO time") from exc
        arms = [a for a in raw.get("arms") or [] if isinstance(a, dict)]
        roles = {str(a.get("role")): str(a.get("variant")) for a in arms}
        return cls(
            path=path,
            flag=need("flag", str),
            kind=need("kind", str),
            recommendation=recommendation,
            current_step=_number_or_none(raw, "current_step", path),
            next_step=_number_or_none(raw, "next_step", path),
            arms=tuple(str(a.get("variant")) for a in arms),
            generated_at=generated.timestamp(),
            reasons=tuple(str(r) for r in raw.get("reasons") or []),
            summary=str(raw.get("summary") or ""),
            bento=roles.get("live"),
            previous=roles.get("previous"),
            arm=_text_or_none(raw, "arm", path),
        )


def _text_or_none(raw: dict[str, Any], name: str, path: Path) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise DecisionRefused(f"{path}: field '{name}' must be a string or null")
    return value


def _number_or_none(raw: dict[str, Any], name: str, path: Path) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise DecisionRefused(f"{path}: field '{name}' must be a number or null")
    return float(value)


@dataclass(frozen=True)
class Who:
    """Who acts (a person, or the guard) and the evidence behind it."""

    actor: str
    source: str  # decide (a person with the CLI) | guard (the controller)
    evidence: dict[str, Any] = field(default_factory=dict)


def schedule_of(definition: FlagDefinition) -> RampSchedule:
    if definition.ramp is None:
        raise RolloutError(
            f"flag {definition.name} declares no ramp schedule: add a `ramp:` section to "
            f"{definition.file} (environment, strategy, control, treatment, steps)"
        )
    return definition.ramp


def flag_definition(flag: str, flags_dir: Path) -> tuple[FlagDefinition, FlagSet]:
    flag_set = load_flags(flags_dir)
    if flag not in flag_set.flags:
        known = ", ".join(flag_set.flags) or "none"
        raise UnknownFlag(f"unknown flag '{flag}'; flags/ defines: {known}")
    return flag_set.flags[flag], flag_set


def last_change(store: AuditStore, location: FlagLocation, flag: str) -> float:
    """When the flag last changed: our own writes, and (on a server) its event log."""
    times = [r.ts for r in store.history(location.server, flag) if r.changed_flag]
    admin: UnleashAdmin | None = getattr(location, "admin", None)
    if admin is not None:
        events = [e for e in admin.get_events(flag, limit=20) if _changes_flag(e.type)]
        times += [
            datetime.fromisoformat(e.created_at.replace("Z", "+00:00")).timestamp() for e in events
        ]
    return max(times, default=0.0)


def _changes_flag(event_type: str) -> bool:
    # Tags, links and metadata do not change who is served what.
    return not any(word in event_type for word in ("tag", "link", "metadata", "favorite"))


def plan_decision(
    decision: DecisionFile, definition: FlagDefinition, doc: Doc, changed_at: float
) -> Move | None:
    """The move `decision` asks of the flag now in state `doc`; None when it asks for none
    (hold, keep, investigate). DecisionRefused, before any write, when it may not be applied."""
    if decision.flag != definition.name:
        raise DecisionRefused(
            f"{decision.path} is for flag '{decision.flag}', not '{definition.name}'"
        )
    action = MOVES.get(decision.recommendation)
    if action is None:
        return None
    _check_fresh(decision, changed_at)
    if decision.kind == "validation":
        return _validation_rollback(decision, definition, doc)
    schedule = schedule_of(definition)
    known = {"default", *definition.variants}
    unknown = [arm for arm in decision.arms if arm not in known]
    if unknown:
        raise DecisionRefused(
            f"{decision.path} compares arms the flag does not have: {', '.join(unknown)} "
            f"(flag {definition.name} has {', '.join(sorted(known))})"
        )
    if decision.arm is not None:
        return _arm_move(decision, definition, doc, schedule, action)
    step = current_step(doc, schedule)
    _check_step(decision, step, action)
    to_step = decision.next_step if action == "ramp" else None
    if to_step is not None and to_step not in schedule.steps:
        raise DecisionRefused(
            f"{decision.path}: next step {to_step:g}% is not in the flag's ramp schedule "
            f"({', '.join(f'{s:g}' for s in schedule.steps)})"
        )
    if to_step is not None and to_step <= step + STEP_TOLERANCE:
        raise DecisionRefused(
            f"{decision.path} asks to ramp to {to_step:g}%, but the flag serves the treatment "
            f"to {step:g}% already: a ramp never lowers a step; run the report again"
        )
    return move(doc, schedule, action, to_step)


def _arm_move(
    decision: DecisionFile,
    definition: FlagDefinition,
    doc: Doc,
    schedule: RampSchedule,
    action: str,
) -> Move:
    """An A/B/n decision: its named arm moves on its own (service.flags.arm_moves), from the
    step the arm was at when the report was made, and a ramp only ever climbs."""
    arm = decision.arm or ""
    if arm not in definition.variants or arm == schedule.control:
        raise DecisionRefused(
            f"{decision.path} is about arm '{arm}', which is not a treatment variant of flag "
            f"{definition.name}"
        )
    if action == "ship":
        raise DecisionRefused(
            f"{decision.path}: ship is not defined for an A/B/n decision ({arm}); roll the "
            "other treatment arms back, then decide on two arms"
        )
    step = arm_steps(doc, schedule, [arm])[arm]
    _check_step(decision, step, action)
    to_step = decision.next_step if action == "ramp" else 0.0
    if action == "ramp":
        _check_climb(decision, to_step, step, schedule)
    try:
        return move_arm(doc, schedule, arm, action, to_step or 0.0)
    except RampError as exc:
        raise DecisionRefused(f"{decision.path}: {exc.message}") from exc


def _check_climb(
    decision: DecisionFile, to_step: float | None, step: float, schedule: RampSchedule
) -> None:
    if to_step is None or to_step not in schedule.steps:
        steps = ", ".join(f"{s:g}" for s in schedule.steps)
        raise DecisionRefused(
            f"{decision.path}: next step {to_step}% is not in the flag's ramp schedule ({steps})"
        )
    if to_step <= step + STEP_TOLERANCE:
        raise DecisionRefused(
            f"{decision.path} asks to ramp {decision.arm} to {to_step:g}%, but it serves "
            f"{step:g}% already: a ramp never lowers a step; run the report again"
        )


def _check_fresh(decision: DecisionFile, changed_at: float) -> None:
    # Decisions record whole seconds: one made in the second of the change is not stale.
    if decision.generated_at < int(changed_at):
        raise DecisionRefused(
            f"{decision.path} is stale: made at {_iso(decision.generated_at)}, but the flag "
            f"changed at {_iso(changed_at)}; run the report again"
        )


def _check_step(decision: DecisionFile, step: float, action: str) -> None:
    """A decision applies only at the step it was made at; a climb needs to know that step."""
    if decision.current_step is None:
        if action == "rollback":
            return  # sending no traffic to the treatment is right from any step
        raise DecisionRefused(
            f"{decision.path} was made without knowing the flag's step, so it cannot say where "
            f"to {action} from (the flag is at {step:g}%); run the report again"
        )
    if abs(decision.current_step - step) > STEP_TOLERANCE:
        raise DecisionRefused(
            f"{decision.path} was made at step {decision.current_step:g}%, but the flag serves "
            f"the treatment to {step:g}% now; run the report again"
        )


def _validation_rollback(decision: DecisionFile, definition: FlagDefinition, doc: Doc) -> Move:
    """A validation's rollback: the canary to 0% when the bento is the ramp's treatment there,
    else everyone back on the version it replaced."""
    bento = decision.bento
    if bento is None or bento not in {doc.get("default"), *(doc.get("variants") or {}).values()}:
        raise DecisionRefused(
            f"{decision.path} validated {bento or 'no bento'}, which flag {definition.name} "
            "does not serve now; nothing to roll back"
        )
    schedule = definition.ramp
    if (
        schedule is not None
        and doc.get("default") != bento
        and treatment_bento(doc, schedule) == bento
        and current_step(doc, schedule) > 0
    ):
        return move(doc, schedule, "rollback")
    if not decision.previous or decision.previous == bento:
        raise DecisionRefused(
            f"{decision.path} names no previous version to go back to from {bento}; "
            "use `rollout rollback " + definition.name + " --to <tag>`"
        )
    return retarget(doc, decision.previous)


def report_defaults(
    definition: FlagDefinition, doc: Doc, treatments: list[str] | None = None
) -> dict[str, Any]:
    """What an A/B report of the flag should assume when not told: the flag's ramp step now,
    its schedule, its arms and the split between them (empty without a ramp section).

    With several `treatments` (A/B/n), each arm's own step (`current_steps`) and the k-arm
    split instead of the ramp's single treatment."""
    schedule = definition.ramp
    if schedule is None:
        return {}
    if treatments and len(treatments) > 1:
        steps = arm_steps(doc, schedule, treatments)
        return {
            "current_steps": ",".join(f"{arm}={step:g}" for arm, step in steps.items()),
            "ramp_steps": ",".join(f"{s:g}" for s in schedule.steps),
            "control": schedule.control,
            "expected_split": arms_split(doc, schedule, treatments),
            **({"engine": schedule.engine} if schedule.engine else {}),
        }
    step = current_step(doc, schedule)
    return {
        "current_step": step,
        "ramp_steps": ",".join(f"{s:g}" for s in schedule.steps),
        "control": schedule.control,
        "treatment": schedule.treatment,
        "expected_split": expected_split(doc, schedule, step),
        **({"engine": schedule.engine} if schedule.engine else {}),
    }


def check_gates(chosen: Move, settings: Settings) -> None:
    """A ramp or ship sends more users to the treatment: its bento must have passed its gates.

    A bento this machine never built says nothing about its gates (as for `flags apply`). A
    rollback of the whole flag sends everyone to one bento, which is held to the same rule.
    """
    if chosen.action == "rollback" and not chosen.everyone_on:
        return
    bento = chosen.everyone_on or chosen.bento
    gate = failed_gates([bento], settings).get(bento)
    if gate and gate not in (NOT_BUILT, NOT_GATED):
        raise DecisionRefused(
            f"{bento} failed its quality gate '{gate}' and may not get more traffic"
        )


def apply_move(
    chosen: Move,
    location: FlagLocation,
    store: AuditStore,
    who: Who,
    why: str,
    notifier: Notifier | None = None,
    evidence_url: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Write `chosen`, audit it with its evidence, link and notify; returns the flags/ diff.

    A ship also makes the shipped bento its family's stable version in the registry (given
    `settings`), so every flag of the family, and this one once its canary rests, serves it.
    The link (in Unleash: a feature link next to the flag) is best effort: the change is
    made and audited whether or not it can be set.
    """
    written = location.write(chosen)
    changes = list(chosen.changes)
    if chosen.action == "ship" and settings is not None and chosen.bento:
        previous = promote(settings.bentos_dir, chosen.bento)
        changes.append(f"stable version: {previous or '(none)'} -> {chosen.bento}")
    if evidence_url:
        try:
            location.link(EVIDENCE_LINK_TITLE, evidence_url)
        except RolloutError as exc:
            log.warning("flag %s: could not link the evidence: %s", chosen.flag, exc.message)
    store.record(
        location.server,
        chosen.flag,
        source=who.source,
        actor=who.actor,
        action=chosen.action,
        what="\n".join(changes),
        why=why,
        state=written.doc,
        evidence={**who.evidence, "from_step": chosen.from_step, "to_step": chosen.to_step},
    )
    if notifier is not None:
        notifier.send(
            Notification(
                chosen.flag, chosen.action, f"{chosen.describe()}: {why}", who.actor, who.evidence
            )
        )
    return written.file_diff


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def pending_promotion(store: AuditStore, location: FlagLocation, flag: str) -> Any:
    """The guard's promotion that waits for a person, or None (a later change cancels it)."""
    rows = store.history(location.server, flag)
    latest = next(
        (r for r in reversed(rows) if r.action in (PENDING, APPROVED, *STATE_ACTIONS)), None
    )
    return latest if latest is not None and latest.action == PENDING else None


def approve(
    definition: FlagDefinition,
    location: FlagLocation,
    store: AuditStore,
    actor: str,
    notifier: Notifier | None = None,
    dry_run: bool = False,
    settings: Settings | None = None,
) -> tuple[Move, str]:
    """Apply the pending promotion of `definition`'s flag as `actor`; returns it and the diff.

    The flag must still be at the step the promotion was proposed from; the move is computed
    afresh from the flag as it is now, so nothing stale is written.
    """
    pending = pending_promotion(store, location, definition.name)
    if pending is None:
        raise RolloutError(f"flag {definition.name} has no promotion waiting for approval")
    proposal = (pending.evidence or {}).get("proposal") or {}
    doc = location.read()
    step = current_step(doc, schedule_of(definition))
    if abs(step - float(proposal.get("from_step", -1))) > STEP_TOLERANCE:
        raise DecisionRefused(
            f"the pending promotion was proposed at {proposal.get('from_step')}%, but the flag "
            f"is at {step:g}% now; it is stale"
        )
    to_step = proposal.get("to_step") if proposal.get("action") == "ramp" else None
    chosen = move(doc, schedule_of(definition), str(proposal.get("action")), to_step)
    if settings is not None:
        check_gates(chosen, settings)
    if dry_run:
        return chosen, ""
    who = Who(actor, DECIDE, {**(pending.evidence or {}), "approved_by": actor})
    store.record(
        location.server,
        definition.name,
        source=DECIDE,
        actor=actor,
        action=APPROVED,
        what=f"approved: {chosen.describe()}",
        why=pending.why,
    )
    return chosen, apply_move(
        chosen,
        location,
        store,
        who,
        f"approved by {actor}: {pending.why}",
        notifier,
        settings=settings,
    )
