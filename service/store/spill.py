"""The spill file: events the store could not take, kept on local disk until replayed.

When the store is down or unwritable (or the writer's queue is full) events are appended, one
JSON line each, to a file of this process under the spill folder, and fsync'd before the
writer moves on: a SIGTERM with the store down then loses nothing. `replay` re-ingests spill
and dead-letter files, storing each event once however often it is replayed:
- every event carries its `event_id`. Replays run one at a time (an advisory lock on
  PostgreSQL, `BEGIN IMMEDIATE` on SQLite), and each looks up, in the transaction that inserts
  them, which of its events are stored already: outcomes by their unique index, exposures (which
  have no index on event_id: it cost 1 us of every write) within each flag's span of `ts`
  through the (flag, ts) index;
- events the writer had sent to the store before spilling them (a commit whose result never
  came back, a batch still being written at shutdown) carry their batch id: a batch whose id is
  in `event_batches` is stored, and replay writes the id with the events, so a late commit of
  the writer's attempt then fails on it instead of storing them twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.store.events import Exposure, Outcome, event_batches, exposures, outcomes

TABLES = {table.name: table for table in (exposures, outcomes)}
SPILL_SUFFIX = ".jsonl"
REPLAY_CHUNK = 500
_REPLAY_LOCK = 7_233_017_002  # pg_advisory_xact_lock key of replay (the migrator's is ...001)
# Errors about the rows themselves (a constraint, a value of the wrong type).
_REFUSED = (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.StatementError)

Row = tuple[str, dict[str, Any], str]  # table name, column values, the line as read


def event_line(event: Exposure | Outcome, batch_id: str | None = None) -> str:
    table = exposures if isinstance(event, Exposure) else outcomes
    batch = {"batch": batch_id} if batch_id else {}
    return json.dumps({"table": table.name, **batch, **asdict(event)}, default=str)


class SpillFile:
    """This process's spill file (created on first use); safe to call from any thread."""

    def __init__(self, folder: Path, path: Path | None = None) -> None:
        self.folder = folder
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SPILL_SUFFIX}"
        self.path = path or folder / name
        self._lock = threading.Lock()
        self.count = 0

    def append(self, events: Iterable[Exposure | Outcome], batch_id: str | None = None) -> int:
        """Write `events` and fsync them; the number written. OSError when the disk fails.

        `batch_id`: the id they were sent to the store under, when they were (see replay).
        """
        text = "".join(event_line(e, batch_id) + "\n" for e in events)
        if not text:
            return 0
        lines = text.count("\n")
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self.count += lines
        return lines


@dataclass
class ReplayResult:
    """What a replay did, per file and in total."""

    files: list[Path] = field(default_factory=list)
    read: int = 0
    written: int = 0
    already_stored: int = 0
    refused: int = 0  # still refused by the store: kept in the dead-letter file
    unreadable: int = 0  # lines that are not events at all: kept, never silently dropped

    def describe(self) -> str:
        return (
            f"{self.read} events read from {len(self.files)} file(s): {self.written} written, "
            f"{self.already_stored} already stored, {self.refused} refused, "
            f"{self.unreadable} unreadable lines kept"
        )


CLAIMED = ".replaying"


def spill_files(spill_dir: Path, dead_letter: Path) -> list[Path]:
    """Every file `replay` reads: the spill folder's files (and any a crashed replay left
    claimed), then the dead-letter file."""
    found: list[Path] = []
    if spill_dir.is_dir():
        found = sorted(spill_dir.glob(f"*{SPILL_SUFFIX}")) + sorted(spill_dir.glob(f"*{CLAIMED}"))
    claimed_dead = dead_letter.with_name(dead_letter.name + CLAIMED)
    return [*found, *(p for p in (claimed_dead, dead_letter) if p.exists())]


def replay(engine: sa.Engine, files: list[Path], dead_letter: Path) -> ReplayResult:
    """Write every event in `files` that the store does not hold yet.

    Each file is first renamed (claimed), so a selector still spilling starts a new file
    instead of appending to one being replayed; it is removed once replayed. Rows the store
    still refuses, and lines that are no event, are appended to `dead_letter`.
    """
    result = ReplayResult(files=list(files))
    for path in files:
        claimed = path if path.name.endswith(CLAIMED) else path.with_name(path.name + CLAIMED)
        if claimed != path:
            path.replace(claimed)
        kept = _replay_file(engine, claimed, result)
        if kept:
            _append(dead_letter, kept)
        claimed.unlink()
    return result


def _replay_file(engine: sa.Engine, path: Path, result: ReplayResult) -> list[str]:
    """Replay one file; the lines that must be kept (refused or unreadable)."""
    kept: list[str] = []
    groups: dict[str | None, list[Row]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parsed = _parse(line)
        if parsed is None:
            result.unreadable += 1
            kept.append(line)
            continue
        name, row, batch_id = parsed
        groups.setdefault(batch_id, []).append((name, row, line))
        result.read += 1
    for batch_id, rows in groups.items():
        if batch_id is None:
            for chunk in _chunks(rows, REPLAY_CHUNK):
                kept += _write_chunk(engine, chunk, None, result)
        else:  # a batch is written whole, with its id, in one transaction
            kept += _write_chunk(engine, rows, batch_id, result)
    return kept


def _parse(line: str) -> tuple[str, dict[str, Any], str | None] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or row.get("table") not in TABLES:
        return None
    table = TABLES[row.pop("table")]
    batch_id = row.pop("batch", None)
    row = {k: v for k, v in row.items() if k in table.c and k != "id"}
    # Files from before event ids: an id from the content, so replaying them is idempotent too.
    row["event_id"] = row.get("event_id") or _content_id(row)
    return table.name, row, batch_id if isinstance(batch_id, str) else None


def _content_id(row: dict[str, Any]) -> str:
    canonical = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _write_chunk(
    engine: sa.Engine, chunk: list[Row], batch_id: str | None, result: ReplayResult
) -> list[str]:
    """Insert the chunk's events not stored yet, in one transaction; the lines of those the
    store refuses (found by halving the chunk, each half on its own)."""
    fresh: list[Row] = []
    try:
        with engine.begin() as conn:
            _one_replay_at_a_time(conn)
            if batch_id is not None and _batch_stored(conn, batch_id):
                stored = len(chunk)
            else:
                fresh, stored = _not_stored(conn, chunk)
                if batch_id is not None:
                    conn.execute(event_batches.insert(), {"batch_id": batch_id, "ts": time.time()})
                _insert(conn, fresh)
    except _REFUSED:
        if batch_id is not None and _batch_stored_now(engine, batch_id):
            result.already_stored += len(chunk)  # the writer's attempt committed meanwhile
            return []
        # Some row is refused, so no attempt of the writer at this batch can have committed:
        # its events are written as any others.
        if len(chunk) == 1:
            result.refused += 1
            return [chunk[0][2]]
        half = len(chunk) // 2
        return _write_chunk(engine, chunk[:half], None, result) + _write_chunk(
            engine, chunk[half:], None, result
        )
    result.written += len(fresh)
    result.already_stored += stored
    return []


def _one_replay_at_a_time(conn: sa.Connection) -> None:
    """Serialize replays: each one's look-up and insert must not interleave with another's."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REPLAY_LOCK})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, not at the first insert


def _batch_stored(conn: sa.Connection, batch_id: str) -> bool:
    query = sa.select(event_batches.c.batch_id).where(event_batches.c.batch_id == batch_id)
    return conn.execute(query).first() is not None


def _batch_stored_now(engine: sa.Engine, batch_id: str) -> bool:
    with engine.connect() as conn:
        return _batch_stored(conn, batch_id)


def _not_stored(conn: sa.Connection, chunk: list[Row]) -> tuple[list[Row], int]:
    """The chunk's rows not in the store yet (each event once), and how many were."""
    stored: set[str] = set()
    for name in {name for name, _, _ in chunk}:
        stored |= _stored_ids(conn, TABLES[name], [row for n, row, _ in chunk if n == name])
    fresh: dict[str, Row] = {}
    for item in chunk:
        event_id = item[1]["event_id"]
        if event_id not in stored and event_id not in fresh:
            fresh[event_id] = item
    return list(fresh.values()), len(chunk) - len(fresh)


def _stored_ids(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> set[str]:
    """Which of these rows' event ids `table` holds.

    Exposures have no index on event_id: each flag's rows are looked for between their
    earliest and latest `ts`, which the (flag, ts) index finds (an event's flag and time are
    fixed when it happens). A row without a flag or a time cannot be stored at all.
    """
    found: set[str] = set()
    spans: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        if table is not exposures:
            spans.setdefault(None, []).append(row)
        elif row.get("flag") is not None and isinstance(row.get("ts"), int | float):
            spans.setdefault(row["flag"], []).append(row)
    for flag, members in spans.items():
        for part in _chunks(members, REPLAY_CHUNK):
            query = sa.select(table.c.event_id).where(
                table.c.event_id.in_([row["event_id"] for row in part])
            )
            if table is exposures:
                times = [row["ts"] for row in part]
                span = table.c.ts.between(min(times), max(times))
                query = query.where(table.c.flag == flag, span)
            found.update(conn.execute(query).scalars())
    return found


def _insert(conn: sa.Connection, rows: list[Row]) -> None:
    for name in {name for name, _, _ in rows}:
        table = TABLES[name]
        conn.execute(table.insert(), [_typed(table, row) for n, row, _ in rows if n == name])


def _typed(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """JSON gave floats/ints/strings back; only booleans may need fixing (older files)."""
    return {
        k: (bool(v) if isinstance(table.c[k].type, sa.Boolean) and v is not None else v)
        for k, v in row.items()
    }


def _append(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))
        out.flush()
        os.fsync(out.fileno())


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
