"""`rollout guard <flag>`: the rollout controller, one tick per interval.

Each tick reads the flag (Unleash or flags/), its audit history and the live traffic, and
does at most one thing:

- a person changed the flag since our last write -> pause (until `rollout guard resume`);
- a live guardrail breached (canary vs control) -> roll back at once, never waiting;
- the step has baked (time and users per arm) -> promote on the A/B report's decision
  (run for this step if there is none yet), or record a pending promotion when the flag
  needs approval; at the last step, ship;
- otherwise hold, saying what it waits for.

Nothing lives in memory between ticks: the step and when it started, pauses and pending
promotions are rows in the audit table, so a restarted guard carries on where it was.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.analysis.guardrails import arm_traffic, check_guardrails
from service.analysis.reports import new_run_dir
from service.config import Settings
from service.errors import RolloutError
from service.flags.audit import GUARD, STATE_ACTIONS, AuditStore, Recorded
from service.flags.documents import diff
from service.flags.model import FlagDefinition, RampSchedule
from service.flags.ramp import Doc, current_step, expected_split, move
from service.flags.state import FlagLocation, same_doc
from service.rollout.decisions import (
    APPROVED,
    PAUSED,
    PENDING,
    RESUMED,
    DecisionFile,
    Who,
    apply_move,
    check_gates,
    plan_decision,
    schedule_of,
)
from service.rollout.identity import report_url
from service.rollout.lease import FlagLease
from service.rollout.notify import Notification, Notifier

log = logging.getLogger(__name__)

GUARD_ACTOR = "rollout-guard"
MAX_BACKOFF = 300.0

ReportRunner = Callable[..., Any]  # keyword arguments -> a ReportResult (service.analysis.reports)


@dataclass
class GuardStatus:
    """What the last tick saw and did; written to <data>/guard/<flag>.json for `status`."""

    flag: str
    # idle | holding | paused | pending | ramped | shipped | rolled-back | error | standby
    state: str
    step: float | None
    message: str
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures_in_a_row: int = 0


class Guard:
    """Guards one flag. `tick()` is one pass; `run()` ticks on an interval with back-off."""

    def __init__(
        self,
        definition: FlagDefinition,
        location: FlagLocation,
        store: AuditStore,
        run_report: ReportRunner,
        *,
        notifier: Notifier | None = None,
        actor: str = GUARD_ACTOR,
        status_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        settings: Settings | None = None,
        lease: FlagLease | None = None,
    ) -> None:
        self.definition, self.schedule = definition, schedule_of(definition)
        self.lease = lease  # several guards of one flag: only the lease holder acts
        self.location, self.store, self.run_report = location, store, run_report
        self.notifier, self.actor, self.clock = notifier, actor, clock
        self.status_dir, self.settings = status_dir, settings  # settings: for the gate check
        self.failures = 0
        # Only a throttle (a hold is not re-examined more often than the bake time), not state.
        self._last_report: tuple[float, float, DecisionFile] | None = None

    @property
    def flag(self) -> str:
        return self.definition.name

    # ------------------------------------------------------------------ one pass

    def tick(self) -> GuardStatus:
        """Look once and act at most once; errors reading or writing come out as 'error'."""
        if self.lease is not None and not self.lease.acquire():
            standby = GuardStatus(self.flag, "standby", None, self.lease.describe())
            self._save(standby)
            return standby
        try:
            status = self._tick()
            self.failures = 0
        except RolloutError as exc:
            self.failures += 1
            status = GuardStatus(self.flag, "error", None, exc.message)
            log.warning("guard %s: %s (failure %d in a row)", self.flag, exc.message, self.failures)
        status.failures_in_a_row = self.failures
        self._save(status)
        return status

    def _tick(self) -> GuardStatus:
        doc = self.location.read()
        rows = self.store.history(self.location.server, self.flag)
        switch = _latest(rows, (PAUSED, RESUMED))
        if switch is not None and switch.action == PAUSED:
            return GuardStatus(self.flag, "paused", None, "paused: run `rollout guard resume`")
        baseline = _latest_change(rows)
        if baseline is None:
            self._record("baseline", "guard started: baseline recorded", state=doc)
            return GuardStatus(self.flag, "holding", current_step(doc, self.schedule), "baseline")
        if not same_doc(doc, baseline.doc):
            return self._pause(doc, baseline)
        step = current_step(doc, self.schedule)
        if step <= 0:
            return GuardStatus(self.flag, "idle", step, "the canary serves nobody (0%)")
        return self._guard_step(doc, step, baseline.ts, _rollout_start(rows, self.schedule))

    def _guard_step(self, doc: Doc, step: float, since: float, start: float) -> GuardStatus:
        s = self.schedule
        canary = arm_traffic(self.store.engine, self.flag, s.treatment, since)
        control = arm_traffic(self.store.engine, self.flag, s.control, start)
        concurrent = arm_traffic(self.store.engine, self.flag, s.control, since)
        checks = check_guardrails(canary, control, s.guardrails, concurrent)
        readings = [asdict(c) for c in checks]
        evidence: dict[str, Any] = {
            "checks": readings,
            "canary": _counts(canary),
            "control": _counts(control),
        }
        breached = [c for c in checks if c.breached]
        if breached:
            why = "guardrail breached: " + "; ".join(f"{c.name}: {c.detail}" for c in breached)
            self._move(move(doc, s, "rollback"), why, evidence)
            return GuardStatus(self.flag, "rolled-back", 0.0, why, checks=readings)
        waiting = self._baking(step, since, canary.users, control.users)
        if waiting:
            return GuardStatus(self.flag, "holding", step, waiting, checks=readings)
        rows = self.store.history(self.location.server, self.flag)
        pending = _latest(rows, (PENDING, APPROVED, *STATE_ACTIONS))
        if pending is not None and pending.action == PENDING:
            return GuardStatus(self.flag, "pending", step, "promotion waits for approval")
        return self._promote(doc, step, since, evidence)

    def _baking(self, step: float, since: float, canary_users: int, control_users: int) -> str:
        s, baked = self.schedule, self.clock() - since
        if baked < s.bake_seconds or min(canary_users, control_users) < s.min_users:
            return (
                f"baking at {step:g}%: {baked:.0f} of {s.bake_seconds:.0f} s, users canary "
                f"{canary_users} / control {control_users} of {s.min_users} each"
            )
        return ""

    def _promote(
        self, doc: Doc, step: float, since: float, evidence: dict[str, Any]
    ) -> GuardStatus:
        if step >= 100:
            chosen = move(doc, self.schedule, "ship")
            why = "baked at 100% with every live guardrail within its limit"
        else:
            decision = self._report(step, since)
            evidence = {**evidence, "report": str(decision.path), "summary": decision.summary}
            chosen = plan_decision(decision, self.definition, doc, since)  # type: ignore[assignment]
            if chosen is None:
                reasons = "; ".join(decision.reasons) or decision.recommendation
                return GuardStatus(self.flag, "holding", step, f"report says hold: {reasons}")
            why = f"report {decision.path}: {'; '.join(decision.reasons)}"
        if self.settings is not None:
            check_gates(chosen, self.settings)  # a failed gate comes out as an error status
        if chosen.action != "rollback" and self.schedule.approval:
            proposal = {
                "action": chosen.action,
                "from_step": chosen.from_step,
                "to_step": chosen.to_step,
                "changes": list(chosen.changes),
            }
            self._record(
                PENDING, chosen.describe(), why=why, evidence={**evidence, "proposal": proposal}
            )
            self._notify(PENDING, f"{chosen.describe()} waits for approval: {why}", evidence)
            return GuardStatus(
                self.flag, "pending", step, f"{chosen.describe()} waits for approval"
            )
        self._move(chosen, why, evidence)
        state = {"ramp": "ramped", "ship": "shipped", "rollback": "rolled-back"}[chosen.action]
        return GuardStatus(self.flag, state, chosen.to_step, f"{chosen.describe()}: {why}")

    def _report(self, step: float, since: float) -> DecisionFile:
        """This step's A/B decision: a new report, unless this step's last one is recent."""
        s, now = self.schedule, self.clock()
        if self._last_report is not None:
            at, started, decision = self._last_report
            if started == since and now - at < max(s.bake_seconds, 1.0):
                return decision
        result = self.run_report(
            flag=self.flag,
            control=s.control,
            treatment=s.treatment,
            metric=s.metric,
            window_start=datetime.fromtimestamp(since, UTC).isoformat(),
            current_step=step,
            ramp_steps=",".join(f"{x:g}" for x in s.steps),
            expected_split=expected_split(self.location.read(), s, step),
            sequential=True,  # the guard looks again and again: intervals must survive peeking
        )
        decision = DecisionFile.from_dict(result.decision, result.output_dir / "decision.json")
        self._last_report = (now, since, decision)
        return decision

    # ------------------------------------------------------------------ actions

    def _pause(self, doc: Doc, baseline: Recorded) -> GuardStatus:
        changes = diff(baseline.doc, doc) or ["the flag differs from the guard's last write"]
        what = "a person changed the flag; the guard pauses:\n" + "\n".join(changes)
        self._record(PAUSED, what, why="never fight a person")
        self._notify(PAUSED, what, {"changes": changes})
        return GuardStatus(self.flag, "paused", None, what)

    def _move(self, chosen: Any, why: str, evidence: dict[str, Any]) -> None:
        who = Who(self.actor, GUARD, evidence)
        url = self._evidence_url(chosen, why, evidence)
        apply_move(chosen, self.location, self.store, who, why, self.notifier, url, self.settings)

    def _evidence_url(self, chosen: Any, why: str, evidence: dict[str, Any]) -> str | None:
        """Write the evidence beside the reports (reports/<flag>/<run>-guard/evidence.json);
        the URL the flag's link should carry: the step's report, else that file."""
        if self.settings is None:
            return None
        folder = new_run_dir(self.settings.reports_dir, self.flag, "guard")
        path = folder / "evidence.json"
        document = {
            "flag": self.flag,
            "action": chosen.action,
            "why": why,
            **evidence,
            "changes": list(chosen.changes),
            "actor": self.actor,
        }
        path.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
        report = evidence.get("report")
        target = Path(report).parent / "report.html" if report else path
        target = target if target.exists() else path
        return report_url(target, self.settings.reports_url, self.settings.reports_dir)

    def _record(self, action: str, what: str, **extra: Any) -> None:
        self.store.record(
            self.location.server,
            self.flag,
            source=GUARD,
            actor=self.actor,
            action=action,
            what=what,
            **extra,
        )

    def _notify(self, action: str, summary: str, details: dict[str, Any]) -> None:
        if self.notifier is not None:
            self.notifier.send(Notification(self.flag, action, summary, self.actor, details))

    def _save(self, status: GuardStatus) -> None:
        if self.status_dir is None:
            return
        self.status_dir.mkdir(parents=True, exist_ok=True)
        path = self.status_dir / f"{self.flag}.json"
        path.write_text(json.dumps(asdict(status), indent=2, default=str), encoding="utf-8")

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        interval: float,
        stop: threading.Event,
        on_status: Callable[[GuardStatus], None] = lambda _s: None,
    ) -> None:
        """Tick every `interval` seconds until `stop` is set; back off while failing."""
        while not stop.is_set():
            status = self.tick()
            on_status(status)
            wait = interval * 2 ** min(self.failures, 10) if self.failures else interval
            wait = self.lease.wait(wait) if self.lease is not None else wait
            stop.wait(min(wait, max(MAX_BACKOFF, interval)))


def resume(store: AuditStore, server: str, flag: str, actor: str, doc: Doc) -> None:
    """Resume a paused guard; the flag as it is now becomes its baseline."""
    store.record(server, flag, source=GUARD, actor=actor, action=RESUMED, what="resumed")
    store.record(
        server,
        flag,
        source=GUARD,
        actor=actor,
        action="baseline",
        what="baseline after resume",
        state=doc,
    )


def _latest(rows: list[Recorded], actions: tuple[str, ...]) -> Recorded | None:
    return next((r for r in reversed(rows) if r.action in actions), None)


def _latest_change(rows: list[Recorded]) -> Recorded | None:
    return next((r for r in reversed(rows) if r.doc is not None), None)


def _rollout_start(rows: list[Recorded], schedule: RampSchedule) -> float:
    """When the canary last went from 0% to serving: control is measured since then."""
    start = None
    for row in reversed([r for r in rows if r.doc is not None]):
        if current_step(row.doc, schedule) <= 0:  # type: ignore[arg-type]
            break
        start = row.ts
    return start if start is not None else 0.0


def _counts(arm: Any) -> dict[str, Any]:
    return {
        "requests": arm.requests,
        "users": arm.users,
        "errors": arm.errors,
        "fallbacks": arm.fallbacks,
        "latency_p99_ms": arm.latency_p99_ms,
    }
