"""The spill file: events the store could not take, kept on local disk until replayed.

When the store is down or unwritable (or the writer's queue is full) events are appended, one
JSON line each, to a file of this process under the spill folder, and fsync'd before the
writer moves on: a SIGTERM with the store down then loses nothing. `replay` re-ingests spill
and dead-letter files; every event carries its `event_id`, unique in the store, so replaying a
file twice (or an event that was also written) stores it once.
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

from service.store.events import Exposure, Outcome, exposures, outcomes

TABLES = {table.name: table for table in (exposures, outcomes)}
SPILL_SUFFIX = ".jsonl"
REPLAY_CHUNK = 500


def event_line(event: Exposure | Outcome) -> str:
    table = exposures if isinstance(event, Exposure) else outcomes
    return json.dumps({"table": table.name, **asdict(event)}, default=str)


class SpillFile:
    """This process's spill file (created on first use); safe to call from any thread."""

    def __init__(self, folder: Path, path: Path | None = None) -> None:
        self.folder = folder
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SPILL_SUFFIX}"
        self.path = path or folder / name
        self._lock = threading.Lock()
        self.count = 0

    def append(self, events: Iterable[Exposure | Outcome]) -> int:
        """Write `events` and fsync them; the number written. OSError when the disk fails."""
        text = "".join(event_line(e) + "\n" for e in events)
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
    rows: list[tuple[str, dict[str, Any], str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parsed = _parse(line)
        if parsed is None:
            result.unreadable += 1
            kept.append(line)
            continue
        rows.append((*parsed, line))
    result.read += len(rows)
    for chunk in _chunks(rows, REPLAY_CHUNK):
        kept += _write_chunk(engine, chunk, result)
    return kept


def _parse(line: str) -> tuple[str, dict[str, Any]] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or row.get("table") not in TABLES:
        return None
    table = TABLES[row.pop("table")]
    row = {k: v for k, v in row.items() if k in table.c and k != "id"}
    # Files from before event ids: an id from the content, so replaying them is idempotent too.
    row["event_id"] = row.get("event_id") or _content_id(row)
    return table.name, row


def _content_id(row: dict[str, Any]) -> str:
    canonical = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _write_chunk(
    engine: sa.Engine, chunk: list[tuple[str, dict[str, Any], str]], result: ReplayResult
) -> list[str]:
    """Insert the chunk's events not stored yet; the lines of those the store refuses."""
    by_table: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for name, row, line in chunk:
        by_table.setdefault(name, []).append((row, line))
    refused: list[str] = []
    for name, items in by_table.items():
        table = TABLES[name]
        stored = _stored_ids(engine, table, [row["event_id"] for row, _ in items])
        fresh: dict[str, tuple[dict[str, Any], str]] = {}
        for row, line in items:
            if row["event_id"] in stored or row["event_id"] in fresh:
                result.already_stored += 1
            else:
                fresh[row["event_id"]] = (row, line)
        refused += _insert(engine, table, list(fresh.values()), result)
    return refused


def _stored_ids(engine: sa.Engine, table: sa.Table, ids: list[str]) -> set[str]:
    query = sa.select(table.c.event_id).where(table.c.event_id.in_(ids))
    with engine.connect() as conn:
        return {row.event_id for row in conn.execute(query)}


def _insert(
    engine: sa.Engine,
    table: sa.Table,
    items: list[tuple[dict[str, Any], str]],
    result: ReplayResult,
) -> list[str]:
    if not items:
        return []
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [_typed(table, row) for row, _ in items])
        result.written += len(items)
        return []
    except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.StatementError):
        if len(items) == 1:  # refused (or stored meanwhile by a concurrent replay)
            if _stored_ids(engine, table, [items[0][0]["event_id"]]):
                result.already_stored += 1
                return []
            result.refused += 1
            return [items[0][1]]
        half = len(items) // 2
        return _insert(engine, table, items[:half], result) + _insert(
            engine, table, items[half:], result
        )


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
