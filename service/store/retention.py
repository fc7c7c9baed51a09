"""Retention of the event store: monthly partitions on PostgreSQL, and pruning old events.

On PostgreSQL (after migration 0003) `exposures` and `outcomes` are partitioned by month of
`ts` (`exposures_y2026m12`, ..., plus `exposures_default` for anything outside). Pruning drops
every partition wholly older than the cutoff (instant, no vacuum) and deletes the older rows
left in the partition the cutoff falls in and in the default. On SQLite it deletes rows. The
flag audit trail is never pruned. `ensure_partitions` creates the months ahead; run it (or
`rollout events prune`, which does) at least monthly, e.g. from the same daily CronJob.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from service.errors import ConfigError

PARTITIONED = ("exposures", "outcomes")
MONTHS_AHEAD = 3
MONTHS_BACK = 24  # when partitioning an existing store: older rows go to the default
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PARTITION = re.compile(r"^(?P<table>\w+)_y(?P<year>\d{4})m(?P<month>\d{2})$")


def parse_age(text: str, option: str = "--older-than") -> float:
    """`90d`, `12h`, `2w` -> seconds; ConfigError naming the option and value otherwise."""
    match = _AGE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"{option}: '{text}' is not an age such as 90d, 12h or 2w")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _month(when: datetime, shift: int = 0) -> datetime:
    index = when.year * 12 + when.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def month_starts(oldest: float | None, now: float | None = None) -> list[datetime]:
    """The first day of each month from `oldest` (at most MONTHS_BACK back) to MONTHS_AHEAD on."""
    current = _month(datetime.fromtimestamp(now if now is not None else time.time(), UTC))
    first = current
    if oldest is not None:
        first = max(_month(datetime.fromtimestamp(oldest, UTC)), _month(current, -MONTHS_BACK))
        first = min(first, current)
    months = [first]
    while months[-1] < _month(current, MONTHS_AHEAD):
        months.append(_month(months[-1], 1))
    return months


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def _existing(conn: sa.Connection, table: str) -> set[str]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table"
        ),
        {"table": table},
    )
    return {r.relname for r in rows}


def create_partitions(conn: sa.Connection, table: str, months: list[datetime]) -> list[str]:
    """Create the missing monthly partitions of `table`; the names created.

    Rows already sitting in the default partition for such a month are moved into it first
    (PostgreSQL refuses a partition whose rows the default still holds).
    """
    existing = _existing(conn, table)
    has_default = f"{table}_default" in existing
    created = []
    for month in months:
        name = partition_name(table, month)
        if name in existing:
            continue
        start, end = month.timestamp(), _month(month, 1).timestamp()
        if not has_default:
            conn.execute(
                sa.text(
                    f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
                )
            )
        else:
            conn.execute(sa.text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)"))
            conn.execute(
                sa.text(
                    f"WITH moved AS (DELETE FROM {table}_default WHERE ts >= {start} "
                    f"AND ts < {end} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
                )
            )
            conn.execute(
                sa.text(
                    f"ALTER TABLE {table} ATTACH PARTITION {name} "
                    f"FOR VALUES FROM ({start}) TO ({end})"
                )
            )
        created.append(name)
    return created


def is_partitioned(conn: sa.Connection, table: str) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid "
            "WHERE c.relname = :table"
        ),
        {"table": table},
    ).first()
    return found is not None


def ensure_partitions(engine: sa.Engine, now: float | None = None) -> list[str]:
    """This month's and the next MONTHS_AHEAD months' partitions, where tables are partitioned."""
    created: list[str] = []
    with engine.begin() as conn:
        for table in PARTITIONED:
            if is_partitioned(conn, table):
                created += create_partitions(conn, table, month_starts(None, now))
    return created


@dataclass
class Pruned:
    """What a prune removed: partitions dropped and rows deleted, per table."""

    cutoff: float
    dropped: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.cutoff, UTC).isoformat(timespec="seconds")
        counts = ", ".join(f"{t}: {n} rows" for t, n in self.rows.items())
        dropped = ", ".join(self.dropped) or "none"
        return f"pruned events older than {when}: {counts}; partitions dropped: {dropped}"


def prune(engine: sa.Engine, older_than: float, now: float | None = None) -> Pruned:
    """Remove exposures, outcomes and writer batch ids older than `older_than` seconds; then
    make partitions."""
    now = time.time() if now is None else now
    result = Pruned(cutoff=now - older_than)
    with engine.begin() as conn:
        for table in PARTITIONED:
            count = 0
            if is_partitioned(conn, table):
                for name in sorted(_existing(conn, table)):
                    match = _PARTITION.match(name)
                    if not match or match.group("table") != table:
                        continue
                    month = datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)
                    if _month(month, 1).timestamp() <= result.cutoff:
                        count += conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
                        conn.execute(sa.text(f"DROP TABLE {name}"))
                        result.dropped.append(name)
            deleted = conn.execute(
                sa.text(f"DELETE FROM {table} WHERE ts < :cutoff"), {"cutoff": result.cutoff}
            )
            result.rows[table] = count + (deleted.rowcount or 0)
        # Batch ids only matter until the spill files naming them are replayed (see spill);
        # they are not events, so they are not counted. Stores before 0006 have none.
        if sa.inspect(conn).has_table("event_batches"):
            conn.execute(
                sa.text("DELETE FROM event_batches WHERE ts < :cutoff"), {"cutoff": result.cutoff}
            )
    ensure_partitions(engine, now)
    return result
