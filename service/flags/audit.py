"""The audit trail of flag changes: who changed what, when and why, next to the traffic.

Two sources land in one table of the event store (the same database, and the same SQLAlchemy
`metadata`, as exposures and outcomes):

- each `rollout flags apply`: the person, their reason, the changes in words, and the flag's
  state right after the apply (the baseline `rollout flags plan` compares the server with to
  find drift);
- each change Unleash's own event log shows for a flag (a toggle or edit in the UI, an API
  call), copied once by event id.

`rollout audit <flag>` lists them with the exposures served before and after each change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.flags.unleash_admin import Event
from service.store.events import exposures, metadata

APPLY = "apply"  # source of a row written by `rollout flags apply`
UNLEASH = "unleash"  # source of a row copied from Unleash's event log
DECIDE = "decide"  # a person applying or approving a decision (`rollout decide`)
GUARD = "guard"  # the rollout controller (`rollout guard`)
ROLLBACK = "rollback"  # `rollout rollback`: the whole flag back on one bento
# Actions of our own tools that left the flag in a recorded state (the drift baseline);
# the guard's other rows (paused, pending-promotion, ...) record what it saw or waits for.
STATE_ACTIONS = ("apply", "ramp", "rollback", "ship", "baseline")

flag_audit = sa.Table(
    "flag_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),  # epoch seconds, UTC
    sa.Column("flag", sa.String(200), nullable=False, index=True),
    sa.Column("environment", sa.String(100)),
    sa.Column("source", sa.String(20), nullable=False),  # apply | unleash
    sa.Column("actor", sa.String(200), nullable=False),  # who
    sa.Column("action", sa.String(200), nullable=False),  # e.g. apply, feature-strategy-updated
    sa.Column("what", sa.Text, nullable=False),
    sa.Column("why", sa.Text, nullable=False, default=""),
    sa.Column("server", sa.String(500), nullable=False),  # the Unleash URL
    sa.Column("unleash_event_id", sa.BigInteger, index=True),
    sa.Column("state", sa.JSON),  # the flag document right after an apply, ramp, ...
    sa.Column("evidence", sa.JSON),  # what triggered a decide/guard action: numbers, report
)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded change, with the exposures of the flag around it."""

    ts: float
    flag: str
    environment: str | None
    source: str
    actor: str
    action: str
    what: str
    why: str
    exposures_before: int = 0
    exposures_after: int = 0
    evidence: Any = None  # what triggered a decide/guard action: numbers, the report's path

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


@dataclass(frozen=True)
class Recorded:
    """One row our own tools wrote (not one copied from Unleash), as the controller reads it."""

    ts: float
    source: str
    actor: str
    action: str
    what: str
    why: str
    state: Any
    evidence: Any

    @property
    def changed_flag(self) -> bool:
        return self.action in STATE_ACTIONS

    @property
    def doc(self) -> dict[str, Any] | None:
        """The flag document the change left, when the row holds one (a rollback's row
        holds its before/after summary instead)."""
        is_doc = isinstance(self.state, dict) and "environments" in self.state
        return self.state if self.changed_flag and is_doc else None


class AuditStore:
    """Reads and writes the audit table; the engine is the event store's."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[flag_audit, exposures])

    def record(
        self,
        server: str,
        flag: str,
        *,
        source: str,
        actor: str,
        action: str,
        what: str,
        why: str = "",
        state: Any = None,
        evidence: Any = None,
    ) -> None:
        """One row: `state` is the flag document a change left, `evidence` what caused it."""
        row = {
            "ts": time.time(),
            "flag": flag,
            "source": source,
            "actor": actor,
            "action": action,
            "what": what,
            "why": why,
            "server": server,
            "state": state,
            "evidence": evidence,
        }
        with self.engine.begin() as conn:
            conn.execute(flag_audit.insert(), [row])

    def record_apply(
        self, server: str, flag: str, actor: str, why: str, what: Iterable[str], state: Any
    ) -> None:
        """Record one apply of `flag`, and its state on the server right after it."""
        what_text = "\n".join(what) or "baseline recorded (the server already matched flags/)"
        self.record(
            server,
            flag,
            source=APPLY,
            actor=actor,
            action=APPLY,
            what=what_text,
            why=why,
            state=state,
        )

    def history(self, server: str, flag: str) -> list[Recorded]:
        """The rows our tools wrote for `flag` on `server`, oldest first."""
        query = (
            sa.select(flag_audit)
            .where(flag_audit.c.flag == flag, flag_audit.c.server == server)
            .where(flag_audit.c.unleash_event_id.is_(None))
            .order_by(flag_audit.c.ts, flag_audit.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Recorded(
                r["ts"],
                r["source"],
                r["actor"],
                r["action"],
                r["what"],
                r["why"] or "",
                r["state"],
                r["evidence"],
            )
            for r in rows
        ]

    def last_applied_state(self, server: str, flag: str) -> Any:
        """The flag's document as our last write to `server` left it (an apply, or a ramp,
        ship or rollback by `rollout decide`/`guard`); None if never written."""
        query = (
            sa.select(flag_audit.c.state)
            .where(flag_audit.c.server == server, flag_audit.c.flag == flag)
            .where(flag_audit.c.source.in_((APPLY, DECIDE, GUARD, ROLLBACK)))
            .where(flag_audit.c.action.in_(STATE_ACTIONS))
            .order_by(flag_audit.c.ts.desc(), flag_audit.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def record_unleash_events(self, server: str, events: Iterable[Event]) -> int:
        """Copy Unleash event-log entries not seen before; returns how many were new."""
        rows = [_event_row(server, e) for e in events if e.feature_name]
        if not rows:
            return 0
        seen_query = sa.select(flag_audit.c.unleash_event_id).where(
            flag_audit.c.server == server,
            flag_audit.c.unleash_event_id.in_([r["unleash_event_id"] for r in rows]),
        )
        with self.engine.begin() as conn:
            seen = set(conn.execute(seen_query).scalars())
            new = [r for r in rows if r["unleash_event_id"] not in seen]
            if new:
                conn.execute(flag_audit.insert(), new)
        return len(new)

    def entries(self, flag: str) -> list[AuditEntry]:
        """Every recorded change of `flag`, oldest first, with exposures before and after it."""
        query = (
            sa.select(flag_audit)
            .where(flag_audit.c.flag == flag)
            .order_by(flag_audit.c.ts, flag_audit.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            bounds = [row["ts"] for row in rows]
            counts = [
                self._exposures(conn, flag, start, end)
                for start, end in zip([None, *bounds], [*bounds, None], strict=True)
            ]
        return [
            AuditEntry(
                ts=row["ts"],
                flag=row["flag"],
                environment=row["environment"],
                source=row["source"],
                actor=row["actor"],
                action=row["action"],
                what=row["what"],
                why=row["why"] or "",
                exposures_before=counts[i],
                exposures_after=counts[i + 1],
                evidence=row["evidence"],
            )
            for i, row in enumerate(rows)
        ]

    @staticmethod
    def _exposures(conn: sa.Connection, flag: str, start: float | None, end: float | None) -> int:
        """Exposures of `flag` with start <= ts < end (open ends unbounded); shadows excluded."""
        query = sa.select(sa.func.count()).where(exposures.c.flag == flag, ~exposures.c.shadow)
        if start is not None:
            query = query.where(exposures.c.ts >= start)
        if end is not None:
            query = query.where(exposures.c.ts < end)
        return int(conn.execute(query).scalar() or 0)


def _event_row(server: str, event: Event) -> dict[str, Any]:
    return {
        "ts": _epoch(event.created_at),
        "flag": event.feature_name,
        "environment": event.environment,
        "source": UNLEASH,
        "actor": event.created_by or "unknown",
        "action": event.type,
        "what": describe_event(event),
        "why": "",
        "server": server,
        "unleash_event_id": event.id,
    }


def _epoch(created_at: str) -> float:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()


def describe_event(event: Event) -> str:
    """A one-line account of an Unleash event: what it changed, from what, to what."""
    where = f" in {event.environment}" if event.environment else ""
    data, before = event.data or {}, event.pre_data or {}
    title = data.get("title") or before.get("title") or data.get("name") or ""
    rollout = (data.get("parameters") or {}).get("rollout")
    old_rollout = (before.get("parameters") or {}).get("rollout")
    detail = ""
    if rollout is not None and old_rollout is not None and rollout != old_rollout:
        detail = f": rollout {old_rollout}% -> {rollout}%"
    elif rollout is not None and old_rollout is None:
        detail = f": rollout {rollout}%"
    label = f" '{title}'" if title and title != event.feature_name else ""
    return f"{event.type}{label}{where}{detail}"
