"""The console's actions: approve a pending promotion, resume a paused guard, roll back.

Each is the function the CLI runs (`rollout decide approve`, `rollout guard resume`, `rollout
rollback`), called with the operator's key name as the actor, so the audit table names who
acted. Each has a `preview` (what would change, for the confirmation page; writes nothing) and
a `run`. No Flask here: the blueprint checks who may act and the CSRF token first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.config import Settings
from service.console.flag_source import FlagSource
from service.errors import RolloutError
from service.rollout import decisions, guard, rollback
from service.rollout.decisions import PAUSED, RESUMED


@dataclass(frozen=True)
class Outcome:
    """What an action would do (preview) or did (run), in words."""

    title: str
    lines: list[str]


def preview_approve(source: FlagSource, flag: str, settings: Settings) -> Outcome:
    with source.location(flag) as (definition, location):
        chosen, _ = decisions.approve(
            definition, location, source.store, "preview", dry_run=True, settings=settings
        )
    return Outcome(f"approve: {chosen.describe()}", list(chosen.changes))


def run_approve(source: FlagSource, flag: str, settings: Settings, operator: str) -> Outcome:
    with source.location(flag) as (definition, location):
        chosen, _ = decisions.approve(
            definition, location, source.store, operator, settings=settings
        )
    return Outcome(f"approved by {operator}: {chosen.describe()}", list(chosen.changes))


def preview_resume(source: FlagSource, flag: str, settings: Settings) -> Outcome:
    with source.location(flag) as (_definition, location):
        rows = source.store.history(location.server, flag)
    switch = next((r for r in reversed(rows) if r.action in (PAUSED, RESUMED)), None)
    if switch is None or switch.action != PAUSED:
        raise RolloutError(f"the guard of {flag} is not paused")
    return Outcome(
        f"resume the guard of {flag}: the flag as it is now becomes its baseline",
        switch.what.splitlines(),
    )


def run_resume(source: FlagSource, flag: str, settings: Settings, operator: str) -> Outcome:
    preview_resume(source, flag, settings)  # refuses when it is not paused (any more)
    with source.location(flag) as (_definition, location):
        guard.resume(source.store, location.server, flag, operator, location.read())
    return Outcome(f"resumed by {operator}: the guard of {flag} acts again", [])


def preview_rollback(source: FlagSource, flag: str, settings: Settings) -> Outcome:
    done, _diff = rollback.rollback(flag, settings, dry_run=True)
    return Outcome(f"roll back {flag}: every user to {done.target}", [done.reason, *done.changes])


def run_rollback(source: FlagSource, flag: str, settings: Settings, operator: str) -> Outcome:
    done, _diff = rollback.rollback(flag, settings, actor=operator)
    return Outcome(f"rolled back by {operator}: {flag} serves {done.target}", done.changes)


Preview = Callable[[FlagSource, str, Settings], Outcome]
Run = Callable[[FlagSource, str, Settings, str], Outcome]

# name -> (preview, run); the blueprint offers exactly these.
ACTIONS: dict[str, tuple[Preview, Run]] = {
    "approve": (preview_approve, run_approve),
    "resume": (preview_resume, run_resume),
    "rollback": (preview_rollback, run_rollback),
}
