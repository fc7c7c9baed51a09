"""The event store's schema: every routing decision (exposure) and every outcome.

Every event carries an `event_id` made when it happened, so an event written twice (replayed
from the spill file, say) is stored once: outcomes hold it in a unique index; exposures, written
100,000 a second, are kept exact without one (see `event_batches` and `service.store.spill`).
The writer that fills these tables in the background is `service.store.writer`; the spill file
and its replay are `service.store.spill`. SQLite by default, PostgreSQL (or any SQLAlchemy URL)
when configured. The notebooks read only these two tables.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.config import Settings
from service.store.retention import is_partitioned

# Lengths the columns hold; the HTTP API refuses longer values (service.serving.limits).
REQUEST_ID_LENGTH = 64
NAME_LENGTH = 200  # flags, users, sessions, variants, bentos, metrics
LABEL_LENGTH = 100  # region, segment, reason, environment
EVENT_ID_LENGTH = 32
SQLITE_PAGE_SIZE = 16_384  # bytes, for a new SQLite store (see _sqlite_pragmas)

metadata = sa.MetaData()

# Every index is paid for on each of 100,000 inserts a second, so exposures keep only what a
# reader looks up (migration 0005 made older stores match):
# - (flag, ts): reports, validation and the audit read one flag, often in a window of time;
#   it replaced single-column indexes on flag and ts (retention's `ts < cutoff` drops whole
#   partitions on PostgreSQL and scans SQLite once a day);
# - request_id, user_id: the outcome check looks both up by equality. Their values are random,
#   so each insert lands on a random page; on PostgreSQL a hash index costs less per insert
#   than a B-tree (no string comparisons on the way down) and equality is all they serve;
# - no index on event_id (migration 0006 dropped the unique one: on PostgreSQL each of the four
#   indexes cost about 1 us of backend CPU per row, 7.0 us with all of them, 5.8 us without
#   this one). Replay finds an exposure already stored by its event id within its flag and
#   time via (flag, ts), one replay at a time; a batch whose commit was ambiguous is found by
#   its id in `event_batches`.
EXPOSURE_INDEXES = (
    sa.Index("ix_exposures_flag_ts", "flag", "ts"),
    sa.Index("ix_exposures_request_id", "request_id", postgresql_using="hash"),
    sa.Index("ix_exposures_user_id", "user_id", postgresql_using="hash"),
)

exposures = sa.Table(
    "exposures",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),  # epoch seconds, UTC
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("flag", sa.String(200), nullable=False),
    sa.Column("environment", sa.String(100), nullable=False),
    sa.Column("user_id", sa.String(200)),
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
    sa.Column("event_id", sa.String(EVENT_ID_LENGTH)),
    *EXPOSURE_INDEXES,
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
    sa.Column("event_id", sa.String(EVENT_ID_LENGTH)),
    sa.Index("ux_outcomes_event_id", "event_id", unique=True),
)


# One row per batch the event writer committed (or replay wrote in its name), written in the
# batch's own transaction: a batch whose commit the writer could not confirm, then retried or
# spilled with its id, is found here instead of being stored twice. One insert per batch (up to
# 10,000 events), at the right edge of its key (ids are time-ordered).
event_batches = sa.Table(
    "event_batches",
    metadata,
    sa.Column("batch_id", sa.String(EVENT_ID_LENGTH), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
)


def new_event_id() -> str:
    """A unique id, 32 hex digits: the time in nanoseconds, then 64 random bits.

    Time first, so ids of new events sort after older ones: each insert lands at the right edge
    of the unique index instead of a random page, which doubled the rows per second SQLite
    writes (68,000 -> 150,000 in the benchmark). Not secret: `random`, seeded from urandom per
    process, is far cheaper than uuid4() on the request path (see serving.api.request_id).
    """
    return f"{time.time_ns():016x}{random.getrandbits(64):016x}"


@dataclass(slots=True)  # slots: the event writer reads 19 attributes of each, 10% faster
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
    event_id: str = field(default_factory=new_event_id)


@dataclass
class Outcome:
    """Something that happened after a decision: a conversion, a label, a correction."""

    metric: str
    value: float
    request_id: str | None = None
    user_id: str | None = None
    flag: str | None = None
    ts: float = field(default_factory=time.time)
    event_id: str = field(default_factory=new_event_id)


def store_url(env_name: str | None, settings: Settings | None = None) -> str:
    """The event store's URL from the environment variable `env_name`, else the settings'.

    Reports are given the variable's name instead of the URL, so no password is ever written
    into an executed notebook.
    """
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    return (settings or Settings.load()).event_store_url


def create_engine(url: str) -> sa.Engine:
    """An engine with the tables created; SQLite in WAL mode so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # A PostgreSQL that does not answer must fail a write in seconds, not hang the writer past
    # the worker's graceful timeout (events are spilled to disk instead).
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
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
            for index in table.indexes:  # new indexes on old tables (create_all skips them)
                # A partitioned table's unique keys must hold `ts`: its migrations own them.
                if not (index.unique and is_partitioned(conn, table.name)):
                    index.create(conn, checkfirst=True)


SQLITE_BUSY_MS = 10_000  # how long a statement waits for another connection's lock


def _write_ahead_log(cursor: Any) -> None:
    """Put the store in WAL mode (kept in the file: every later connection finds it so).

    The workers of `rollout serve` open a fresh store at the same moment, and SQLite can answer
    a journal-mode change that meets another connection's lock with "database is locked" at
    once, without waiting out the busy timeout: two processes opening a new store together met
    it in 77 trials of 100, and a gunicorn worker that fails to boot stops the whole server.
    So the mode is read first, changed only when it is not WAL yet, and a locked change is
    tried again for as long as any other statement would wait.
    """
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)  # another opener holds the lock for milliseconds: look again
            delay = min(delay * 2, 0.2)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # 16 KiB pages for a new store (SQLite ignores this once the file has content): with the
    # default 4 KiB, each insert split and rewrote four times as many index pages; the store's
    # floor (bare inserts, scripts/benchmarks/event_rates.py) went from 85-91k rows/s to
    # 98-105k (8 KiB: 94k; 32 KiB: 103k; 64 KiB: 93k). A store made earlier keeps 4 KiB pages
    # (the README says how to convert one).
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    _write_ahead_log(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    # A checkpoint copies the log back into the database and syncs both, on the committing
    # connection (the event writer). SQLite's default (every 1,000 pages, 4 MB) checkpointed
    # many times a second at 50,000 exposures/s, copying the same random index pages again and
    # again; every 10,000 pages copies each page once per 40 MB of log.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    # Random user ids touch index pages all over the file: with SQLite's default 2 MB page
    # cache the writer re-read evicted pages and spilled dirty ones mid-transaction (the store's
    # floor in scripts/benchmarks/event_rates.py: 110,000 rows/s at 2 MB, 130,000-138,000 at 8
    # or 32 MB alike, now that request ids are time-ordered). 8 MB, allocated as pages are used:
    # a selector worker's resident memory grows by up to that much as it logs, then stays.
    cursor.execute("PRAGMA cache_size=-8192")
    cursor.close()
