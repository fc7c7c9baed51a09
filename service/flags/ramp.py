"""Ramp steps as changes to a flag document: where the canary is, and the next state.

A flag document is what a flag file holds (service.flags.documents builds the same shape from a
server), so one pure function serves embedded mode (flags/) and server mode (Unleash) alike.
The step is the share of users the ramp strategy serves the treatment variant:
rollout x treatment weight / 100. Moving to a step changes the strategy's rollout; past the
treatment's weight (a 50/50 A/B asked for 100%) the strategy goes to 100% and the weights
shift toward the treatment, so any step up to 100 is reachable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from service.errors import RolloutError
from service.flags.model import RampSchedule

Doc = dict[str, Any]
ACTIONS = ("ramp", "hold", "rollback", "ship")


class RampError(RolloutError):
    """The flag cannot make the move asked of it (no such strategy, an impossible step)."""

    code = "ramp_refused"


@dataclass(frozen=True)
class Move:
    """One change of a flag's rollout: what, from which step to which, and the new document."""

    action: str  # ramp | rollback | ship
    flag: str
    from_step: float
    to_step: float
    doc: Doc
    changes: tuple[str, ...]  # in words, e.g. "development strategy ab-test: rollout 80 -> 100"
    bento: str = ""  # the treatment's bento: who gets more (or no) traffic
    everyone_on: str = ""  # a rollback of the whole flag: the one bento everyone gets

    def describe(self) -> str:
        if self.everyone_on:
            return f"{self.action} {self.flag}: everyone on {self.everyone_on}"
        return f"{self.action} {self.flag}: {_pct(self.from_step)} -> {_pct(self.to_step)}"


def ramp_strategy(doc: Doc, schedule: RampSchedule) -> Doc:
    """The ramp strategy in `doc` (RampError when the flag no longer has it)."""
    env = doc.get("environments", {}).get(schedule.environment) or {}
    for strategy in env.get("strategies", []):
        if strategy.get("name") == schedule.strategy:
            return dict(strategy)
    raise RampError(
        f"flag {doc.get('flag')}: no strategy '{schedule.strategy}' in {schedule.environment} "
        "(renamed or removed in Unleash?)"
    )


def current_step(doc: Doc, schedule: RampSchedule) -> float:
    """The share of users (percent) the ramp strategy serves the treatment; 0 when off."""
    env = doc.get("environments", {}).get(schedule.environment) or {}
    if not env.get("enabled"):
        return 0.0
    strategy = ramp_strategy(doc, schedule)
    weight = float(strategy.get("variants", {}).get(schedule.treatment, 0))
    return round(float(strategy.get("rollout", 100)) * weight / 100, 6)


def expected_split(doc: Doc, schedule: RampSchedule, step: float) -> str | None:
    """`control:treatment` shares for the SRM check, when the flag makes them knowable."""
    if schedule.control == "default":
        env = doc["environments"][schedule.environment]
        if len(env["strategies"]) != 1 or env["strategies"][0].get("constraints"):
            return None  # other strategies take an unknown share of the users
        control = 100 - step
    else:
        strategy = next(
            x
            for x in doc["environments"][schedule.environment]["strategies"]
            if x["name"] == schedule.strategy
        )
        control = strategy.get("rollout", 100) * strategy["variants"].get(schedule.control, 0) / 100
    return f"{control:g}:{step:g}" if control > 0 and step > 0 else None


def next_step(step: float, schedule: RampSchedule) -> float | None:
    """The first declared step above `step`; None at the last one."""
    return next((s for s in schedule.steps if s > step + 1e-9), None)


def treatment_bento(doc: Doc, schedule: RampSchedule) -> str:
    bento = doc.get("variants", {}).get(schedule.treatment)
    if not bento:
        raise RampError(f"flag {doc.get('flag')}: variant '{schedule.treatment}' serves no bento")
    return str(bento)


def move(doc: Doc, schedule: RampSchedule, action: str, to_step: float | None = None) -> Move:
    """The document after `action` (ramp to `to_step` or the next step, rollback, ship)."""
    if action not in ("ramp", "rollback", "ship"):
        raise RampError(f"unknown action {action!r} (one of ramp, rollback, ship)")
    step = current_step(doc, schedule)
    new = copy.deepcopy(doc)
    changes: list[str] = []
    if action == "ship":
        bento = treatment_bento(doc, schedule)
        # An explicit default follows the ship; without one the registry's stable version
        # (promoted by the caller, rollout.decisions.apply_move) serves everyone.
        if doc.get("default") and doc.get("default") != bento:
            new["default"] = bento
            changes.append(f"default: {doc.get('default')} -> {bento}")
        target = 0.0  # everyone is on the new default; the canary strategy rests at 0
    elif action == "rollback":
        target = 0.0
    else:
        target = to_step if to_step is not None else _required_next(step, schedule, doc)
    changes += _set_step(new, schedule, target)
    if not changes:
        raise RampError(f"flag {doc.get('flag')} is already at {_pct(target)}: nothing to {action}")
    reported = 100.0 if action == "ship" else target
    bento = str(doc.get("variants", {}).get(schedule.treatment, ""))
    return Move(action, str(doc.get("flag")), step, reported, new, tuple(changes), bento)


def retarget(doc: Doc, target: str) -> Move:
    """The whole flag back on `target`: its default and every variant serve it; shadows,
    strategies and weights stay as they are (a rollback of a version that is the default)."""
    new = copy.deepcopy(doc)
    changes = []
    if doc.get("default") != target:
        new["default"] = target
        changes.append(f"default: {doc.get('default')} -> {target}")
    for name, tag in (doc.get("variants") or {}).items():
        if tag != target:
            new["variants"][name] = target
            changes.append(f"variant {name}: {tag} -> {target}")
    if not changes:
        raise RampError(f"flag {doc.get('flag')} serves only {target}: nothing to roll back")
    flag = str(doc.get("flag"))
    return Move("rollback", flag, 0.0, 0.0, new, tuple(changes), target, everyone_on=target)


def _required_next(step: float, schedule: RampSchedule, doc: Doc) -> float:
    target = next_step(step, schedule)
    if target is None:
        raise RampError(
            f"flag {doc.get('flag')} is at the last step ({_pct(step)}): ship instead of ramp"
        )
    return target


def _set_step(doc: Doc, schedule: RampSchedule, step: float) -> list[str]:
    """Set the ramp strategy so it serves the treatment to `step` percent; the changes."""
    env = doc["environments"][schedule.environment]
    index = next(i for i, s in enumerate(env["strategies"]) if s.get("name") == schedule.strategy)
    old = env["strategies"][index]
    new = {**old, "variants": dict(old.get("variants", {}))}
    weight = float(new["variants"].get(schedule.treatment, 0))
    if weight <= 0:
        raise RampError(f"strategy '{schedule.strategy}' gives '{schedule.treatment}' no weight")
    if step <= weight:
        new["rollout"] = round(step * 100 / weight)
    else:  # beyond the treatment's weight: everyone in the strategy, weights shifted to it
        new["rollout"] = 100
        new["variants"] = _shifted_weights(new["variants"], schedule.treatment, step)
    env["strategies"][index] = new
    where = f"{schedule.environment} strategy {schedule.strategy}"
    changes = []
    if new.get("rollout", 100) != old.get("rollout", 100):
        changes.append(f"{where}: rollout {old.get('rollout', 100)} -> {new['rollout']}")
    if new["variants"] != old.get("variants", {}):
        changes.append(f"{where}: variants {old.get('variants')} -> {new['variants']}")
    return changes


def _shifted_weights(weights: dict[str, Any], treatment: str, step: float) -> dict[str, Any]:
    """Treatment at `step`%, the others keep their proportions of the rest; zeros dropped."""
    others = {k: float(v) for k, v in weights.items() if k != treatment}
    total = sum(others.values())
    rest = 100.0 - step
    shifted = {k: round(v * rest / total, 1) for k, v in others.items()} if total else {}
    if shifted:  # rounding must not break the sum of 100
        first = next(iter(shifted))
        shifted[first] = round(rest - sum(v for k, v in shifted.items() if k != first), 1)
    result = {treatment: _whole(step), **{k: _whole(v) for k, v in shifted.items() if v > 0}}
    return result


def _whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _pct(step: float) -> str:
    return f"{step:g}%"
