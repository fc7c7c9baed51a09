"""The event store: every routing decision (exposure) and every outcome, batched in the background.

Requests only append to an in-memory queue; one writer thread inserts in batches, so logging
never blocks the request path. `close()` drains the queue, so nothing buffered is lost on a
graceful shutdown. SQLite by default, PostgreSQL (or any SQLAlchemy URL) when configured.
The notebooks read only these two tables.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

metadata = sa.MetaData()

exposures = sa.Table(
    "exposures",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),  # epoch seconds, UTC
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("flag", sa.String(200), nullable=False, index=True),
    sa.Column("environment", sa.String(100), nullable=False),
    sa.Column("user_id", sa.String(200), index=True),
    sa.Column("session_id", sa.String(200)),
    sa.Column("region", sa.String(100)),
    sa.Column("segment", sa.String(100)),
    sa.Column("properties", sa.JSON),
    sa.Column("variant", sa.String(200), nullable=False),
    sa.Column("bento", sa.String(200)),
    sa.Column("reason", sa.String(100), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),  # HTTP status returned to the caller
    sa.Column("latency_ms", sa.Float),
    sa.Column("prediction", sa.Float),  # the model's score, when the bento returned one
    sa.Column("inputs", sa.JSON),  # the model inputs as sent, for drift analysis
    sa.Column("shadow", sa.Boolean, nullable=False, default=False),
    sa.Column("fallback", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text),
)

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("request_id", sa.String(64), index=True),
    sa.Column("user_id", sa.String(200), index=True),
    sa.Column("flag", sa.String(200), index=True),
    sa.Column("metric", sa.String(200), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
)


@dataclass
class Exposure:
    """One routing decision, as logged."""

    request_id: str
    flag: str
    environment: str
    variant: str
    bento: str | None
    reason: str
    status: int
    user_id: str | None = None
    session_id: str | None = None
    region: str | None = None
    segment: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    prediction: float | None = None
    inputs: Any = None
    shadow: bool = False
    fallback: bool = False
    error: str | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class Outcome:
    """Something that happened after a decision: a conversion, a label, a correction."""

    metric: str
    value: float
    request_id: str | None = None
    user_id: str | None = None
    flag: str | None = None
    ts: float = field(default_factory=time.time)


def create_engine(url: str) -> sa.Engine:
    """An engine with the tables created; SQLite in WAL mode so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    _create_schema(engine)
    return engine


# What a database says when another process created the same table or column first.
_CREATED_CONCURRENTLY = ("already exists", "duplicate column", "duplicate key value")


def _create_schema(engine: sa.Engine, attempts: int = 10) -> None:
    """Create the tables and add missing columns, tolerating a concurrent creator.

    Several gunicorn workers start at once on a fresh store; checking and creating are two
    steps, so one of them can lose the race and must simply look again. Each lost race means
    another creator made a table or column, so a few more attempts than tables always suffice.
    """
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            return
        except sa.exc.DBAPIError as exc:
            raced = any(words in str(exc).lower() for words in _CREATED_CONCURRENTLY)
            if not raced or attempt == attempts - 1:
                raise


def _add_missing_columns(engine: sa.Engine) -> None:
    """Bring a store made by an older version up to date: new columns are nullable adds."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(
                        sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_STOP = object()


class EventWriter:
    """Appends events from any thread; a background thread writes them in batches.

    Never raises into the request path. A failed batch is retried (with back-off) rather
    than dropped, so a database blip delays events but does not lose them.
    """

    def __init__(
        self, engine: sa.Engine, batch_size: int = 500, dead_letter: Path | None = None
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.dead_letter = dead_letter
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._written = 0
        # Refused by the store: kept in the dead-letter file for replay, or lost without one.
        self.dead_lettered = 0
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    def record(self, event: Exposure | Outcome) -> None:
        """Queue one event; returns at once."""
        self._queue.put(event)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def written(self) -> int:
        return self._written

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "event writer did not drain within %.0fs; %d events pending", timeout, self.depth
            )

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything queued so far is written (for tests and the simulator)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, markers, stopping = self._take_batch()
            if batch:
                self._write(batch)
            for marker in markers:
                marker.set()

    def _take_batch(self) -> tuple[list[Exposure | Outcome], list[threading.Event], bool]:
        """Block for the first item, then take whatever else is already queued.

        Under load events pile up while a batch is being written, so batches grow by
        themselves; when idle, a single event is written at once.
        """
        items = [self._queue.get()]
        while len(items) < self.batch_size:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch = [i for i in items if isinstance(i, Exposure | Outcome)]
        markers = [i for i in items if isinstance(i, threading.Event)]
        return batch, markers, any(i is _STOP for i in items)

    def _write(self, batch: list[Exposure | Outcome]) -> None:
        """Insert a batch. A lost connection is retried with back-off; any other failure
        (the store refusing these rows) sends the batch to the dead-letter file instead, so
        one bad batch neither loses events nor wedges the writer."""
        rows_by_table: dict[sa.Table, list[dict[str, Any]]] = {exposures: [], outcomes: []}
        for event in batch:
            table = exposures if isinstance(event, Exposure) else outcomes
            rows_by_table[table].append(asdict(event))
        delay = 0.1
        while True:
            try:
                with self.engine.begin() as conn:
                    for table, rows in rows_by_table.items():
                        if rows:
                            conn.execute(table.insert(), rows)
                self._written += len(batch)
                return
            except sa.exc.OperationalError:
                log.exception("writing %d events failed; retrying in %.1fs", len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                if len(batch) > 1:  # find the refused rows; write the others
                    for event in batch:
                        self._write([event])
                    return
                log.exception("the event store refused an event")
                self._dead_letter(rows_by_table)
                return

    def _dead_letter(self, rows_by_table: dict[sa.Table, list[dict[str, Any]]]) -> None:
        count = sum(map(len, rows_by_table.values()))
        if self.dead_letter is None:
            self.dropped += count
            log.error("no dead-letter file configured; %d events dropped", count)
            return
        self.dead_lettered += count
        self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter.open("a", encoding="utf-8") as out:
            for table, rows in rows_by_table.items():
                for row in rows:
                    out.write(json.dumps({"table": table.name, **row}, default=str) + "\n")
        log.error("events written to %s for replay", self.dead_letter)
