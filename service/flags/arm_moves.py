"""A/B/n ramp moves: one treatment arm of a strategy with several, moved on its own.

With several treatment arms in the ramp strategy, each arm's step is its own share of the
environment's users (rollout x its weight / 100). A move sets the named arm's share and leaves
every other treatment arm's share where it is:

- a ramp takes its users from outside the strategy first (the rollout grows, the control keeps
  its share) and only then from the control, so ramping the winner never gives a losing arm
  more users;
- a rollback gives the arm's users to the control (when the control is one of the strategy's
  variants; else the rollout shrinks and they go back to the default).

A move the strategy cannot hold (the arms' shares beyond 100%) is refused, never approximated
by moving another arm. Weights have one decimal (as in flags/): the named arm's share is exact
to within 0.05 points.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

from service.flags.model import RampSchedule
from service.flags.ramp import Doc, Move, RampError, current_step, ramp_strategy


def arm_steps(doc: Doc, schedule: RampSchedule, arms: list[str]) -> dict[str, float]:
    """Each treatment arm's share of users (percent) in the ramp strategy now."""
    return {arm: current_step(doc, replace(schedule, treatment=arm)) for arm in arms}


def arms_split(doc: Doc, schedule: RampSchedule, arms: list[str]) -> str | None:
    """`control:b:c` shares for the k-arm split check, when the flag makes them knowable."""
    steps = arm_steps(doc, schedule, arms)
    env = doc["environments"][schedule.environment]
    if schedule.control == "default":
        if len(env["strategies"]) != 1 or env["strategies"][0].get("constraints"):
            return None  # other strategies take an unknown share of the users
        control = 100 - sum(steps.values())
    else:
        control = current_step(doc, replace(schedule, treatment=schedule.control))
    shares = [control, *steps.values()]
    return ":".join(f"{s:g}" for s in shares) if min(shares) > 0 else None


def move_arm(doc: Doc, schedule: RampSchedule, arm: str, action: str, to_step: float) -> Move:
    """`doc` with `arm` at `to_step` percent (a ramp) or 0 (a rollback); see the docstring."""
    if action not in ("ramp", "rollback"):
        raise RampError(
            f"{action} is not defined for an A/B/n flag: roll the other treatment arms back "
            "first, then decide on two arms"
        )
    arm_schedule = replace(schedule, treatment=arm)
    step = current_step(doc, arm_schedule)
    target = 0.0 if action == "rollback" else to_step
    strategy = ramp_strategy(doc, schedule)
    shares = _shares(strategy)
    shares[arm] = target
    others = sum(v for k, v in shares.items() if k != schedule.control)
    rollout = float(strategy.get("rollout", 100))
    if schedule.control in shares:
        # A ramp takes its users from outside the strategy first (the control keeps its
        # share), then from the control; a rollback gives the arm's users to the control.
        wanted = math.ceil(others + shares[schedule.control] - 1e-9)
        if action == "ramp":
            rollout = float(min(100, max(rollout, wanted)))
        shares[schedule.control] = rollout - others
    else:
        rollout = float(math.ceil(others - 1e-9))
    if rollout > 100 or shares.get(schedule.control, 0) < 0:
        raise RampError(
            f"flag {doc.get('flag')}: {arm} cannot serve {target:g}% while the other arms keep "
            f"theirs ({others - target:g}%); roll an arm back first"
        )
    new = copy.deepcopy(doc)
    changes = _write(new, schedule, int(rollout), shares, arm)
    if not changes:
        raise RampError(f"flag {doc.get('flag')}: {arm} is already at {target:g}%")
    bento = str(doc.get("variants", {}).get(arm, ""))
    return Move(action, str(doc.get("flag")), step, target, new, tuple(changes), bento)


def _shares(strategy: dict[str, Any]) -> dict[str, float]:
    rollout = float(strategy.get("rollout", 100))
    return {k: rollout * float(v) / 100 for k, v in (strategy.get("variants") or {}).items()}


def _write(doc: Doc, schedule: RampSchedule, rollout: int, shares: dict[str, float], arm: str):
    """Set the strategy to `rollout` and weights giving `shares`; the changes in words."""
    env = doc["environments"][schedule.environment]
    index = next(i for i, s in enumerate(env["strategies"]) if s.get("name") == schedule.strategy)
    old = env["strategies"][index]
    weights = _weights(shares, rollout, keep=arm) if rollout else dict(old.get("variants", {}))
    new = {**old, "rollout": rollout, "variants": weights}
    env["strategies"][index] = new
    where = f"{schedule.environment} strategy {schedule.strategy}"
    changes = []
    if new["rollout"] != old.get("rollout", 100):
        changes.append(f"{where}: rollout {old.get('rollout', 100)} -> {new['rollout']}")
    if new["variants"] != old.get("variants", {}):
        changes.append(f"{where}: variants {old.get('variants')} -> {new['variants']}")
    return changes


def _weights(shares: dict[str, float], rollout: int, keep: str) -> dict[str, int | float]:
    """Weights with one decimal adding up to 100; the rounding lands on the largest other arm,
    so the named arm's share is as exact as one decimal allows. Zero weights are dropped."""
    weights = {k: round(v * 100 / rollout, 1) for k, v in shares.items()}
    others = [k for k in weights if k != keep and weights[k] > 0] or [keep]
    largest = max(others, key=lambda k: weights[k])
    weights[largest] = round(100 - sum(v for k, v in weights.items() if k != largest), 1)
    return {k: int(v) if float(v).is_integer() else v for k, v in weights.items() if v > 0}
