"""A flag's timeline: every recorded change, who made it and why, and the primary metric after it.

The changes are the audit table's rows (our applies, decisions, guard actions, rollbacks, and
Unleash's event log copied by event id: service.flags.audit). After each change that moved the
flag, the primary metric (users converting on it, per variant, until the next change) is read
from the event store with the A/B report's own query (service.analysis.queries.ab_sample), so
the timeline and the reports count the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.analysis.queries import Window, ab_sample
from service.flags.audit import STATE_ACTIONS, UNLEASH, AuditEntry, AuditStore

MAX_MEASURED = 30  # changes measured, newest first; older ones are listed without the metric
DEFAULT_ARM = "default"


@dataclass(frozen=True)
class ArmMetric:
    variant: str
    users: int
    conversions: int

    @property
    def rate(self) -> float | None:
        return self.conversions / self.users if self.users else None


@dataclass(frozen=True)
class TimelineEntry:
    entry: AuditEntry
    moved_flag: bool
    evidence_link: str | None  # path under reports/, when the evidence is a report there
    metric: list[ArmMetric]  # per variant, from this change until the next one


def timeline(
    store: AuditStore,
    flag: str,
    variants: list[str],
    metric: str,
    reports_dir: Path,
) -> list[TimelineEntry]:
    """Every change of `flag`, newest first, with the metric per variant after the moves."""
    entries = store.entries(flag)
    moves = [i for i, e in enumerate(entries) if _moved(e)]
    measured = set(moves[-MAX_MEASURED:])
    arms = [DEFAULT_ARM, *[v for v in variants if v != DEFAULT_ARM]]
    result = []
    for i, entry in enumerate(entries):
        following = next((entries[j].ts for j in moves if j > i), None)
        arm_metrics = (
            _metric(store.engine, flag, arms, metric, entry.ts, following) if i in measured else []
        )
        link = _evidence_link(entry.evidence, reports_dir)
        result.append(TimelineEntry(entry, i in moves, link, arm_metrics))
    return list(reversed(result))


def _moved(entry: AuditEntry) -> bool:
    if entry.source == UNLEASH:  # tags, links and metadata do not change who gets what
        return not any(w in entry.action for w in ("tag", "link", "metadata", "favorite"))
    return entry.action in STATE_ACTIONS


def _metric(
    engine: sa.Engine, flag: str, arms: list[str], metric: str, start: float, end: float | None
) -> list[ArmMetric]:
    window = Window(_utc(start), _utc(end) if end is not None else None)
    sample = ab_sample(engine, flag=flag, arms=arms, metric=metric, window=window)
    return [
        ArmMetric(arm, stats.users, stats.conversions)
        for arm, stats in sample.arms.items()
        if stats.users
    ]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _evidence_link(evidence: Any, reports_dir: Path) -> str | None:
    """The report behind a change, as a path under reports/ (its HTML when there is one)."""
    report = evidence.get("report") if isinstance(evidence, dict) else None
    if not isinstance(report, str) or not report:
        return None
    path = Path(report)
    path = path if path.is_absolute() else Path.cwd() / path
    html = path.parent / "report.html"
    target = html if html.exists() else path
    try:
        return target.resolve().relative_to(reports_dir.resolve()).as_posix()
    except ValueError:
        return None
