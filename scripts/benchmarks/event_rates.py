"""Section 3 of the selector benchmark: exposures written per second, and the floors below it.

For each store, on fresh tables, with exposures shaped like the selector's (a request id as
the selector makes one, time first: `serving.api.new_request_id`; users drawn from 100,000;
the context's region in `properties`, the model inputs as sent, a score and a latency):

- writer: from `record()` to committed rows through `EventWriter`, with the service's batch
  size. The events are built before the clock starts: a request builds its exposure anyway.
- bulk.write: the same events written by `bulk.write` in batches from one thread, no queue.
- bare, indexed: rows made before the clock starts, handed to the driver (binary COPY,
  executemany) in batches, into the same table with its indexes ((flag, ts), request_id and
  user_id: `EXPOSURE_INDEXES`): what the store itself takes on this machine, whatever Python does.
- bare, 0005 indexes: the same with the unique event_id index migration 0006 dropped, for the
  before/after in one run.
- bare, no index: the same without any index: what the indexes cost.

"Fresh tables" means emptied with TRUNCATE on PostgreSQL: DELETE left every earlier way's rows
dead in the heap and the indexes, and autovacuum cleaning them up during the next measurement.

Each rate is the median of three rounds, the ways taking turns within a round.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from service.config import Settings
from service.registry.population import population
from service.serving.api import new_request_id
from service.store import bulk
from service.store.events import Exposure, create_engine, event_batches, exposures
from service.store.writer import EventWriter

TARGET = 100_000
ROUNDS = 3
EXPOSURES = 200_000
USERS = 100_000


@dataclass(frozen=True)
class EventRates:
    """Exposures a second: through the writer and each floor below it."""

    writer: float
    bulk_write: float
    bare_indexed: float
    bare_0005_indexes: float
    bare_unindexed: float


def bench_exposures(n: int, seed: int = 7) -> list[Exposure]:
    """`n` exposures as the selector logs them (see `Selector._record`)."""
    rng = random.Random(seed)
    people = population(1000, seed=3)
    events = []
    for _ in range(n):
        person = people[rng.randrange(len(people))]
        events.append(
            Exposure(
                request_id=new_request_id(),
                flag="bench",
                environment="development",
                variant="control",
                bento="churn:v1",
                reason="strategy_variant",
                status=200,
                user_id=f"u{rng.randrange(USERS):06d}",
                region=person.region,
                properties={"region": person.region},
                latency_ms=rng.uniform(2.0, 9.0),
                prediction=rng.random(),
                inputs=[person.features()],
            )
        )
    return events


def measure(database_url: str, n: int = EXPOSURES, rounds: int = ROUNDS) -> EventRates:
    """All five rates on `database_url`, each on an emptied table: the median of `rounds`.

    The ways take turns within each round, so a slow spell of the machine (seen here: the same
    way 30% apart from one run to the next) falls on all of them, not on one.
    """
    engine = create_engine(database_url)
    batch = Settings.load().event_batch_size
    try:
        timings = [[_seconds(engine, n, batch, way) for way in _WAYS] for _ in range(rounds)]
        rates = [n / statistics.median(way) for way in zip(*timings, strict=True)]
    finally:
        _empty(engine)
        _restore_indexes(engine)
        engine.dispose()
    return EventRates(*rates)


Way = Callable[[sa.Engine, int, int], Callable[[], None]]


def _seconds(engine: sa.Engine, n: int, batch: int, way: Way) -> float:
    """How long `way` takes to write `n` exposures (its preparation before the clock)."""
    _empty(engine)
    _restore_indexes(engine)
    write = way(engine, n, batch)
    started = time.perf_counter()
    write()
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(exposures)).scalar_one()
    assert stored == n, f"{way.__name__}: {stored} of {n} exposures stored"
    return seconds


def _writer(engine: sa.Engine, n: int, batch: int) -> Callable[[], None]:
    events = bench_exposures(n)
    writer = EventWriter(engine, batch_size=batch, queue_size=n)

    def write() -> None:
        for event in events:
            writer.record(event)
        writer.close(timeout=300)

    return write


def _bulk_write(engine: sa.Engine, n: int, batch: int) -> Callable[[], None]:
    events = bench_exposures(n)

    def write() -> None:
        for first in range(0, n, batch):
            with engine.begin() as conn:
                bulk.write(conn, events[first : first + batch])

    return write


def _bare(engine: sa.Engine, n: int, batch: int) -> Callable[[], None]:
    rows = [bulk.exposure_row(e) for e in bench_exposures(n)]

    def write() -> None:
        for first in range(0, n, batch):
            with engine.begin() as conn:
                bulk.write_rows(conn, exposures, rows[first : first + batch])

    return write


# The unique index exposures had before migration 0006 (on an unpartitioned table). Text, not
# an sa.Index: that would join `exposures.indexes` and be created by every create_all.
_EVENT_ID_INDEX = "ux_exposures_event_id"


def _bare_0005_indexes(engine: sa.Engine, n: int, batch: int) -> Callable[[], None]:
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE UNIQUE INDEX {_EVENT_ID_INDEX} ON exposures (event_id)"))
    return _bare(engine, n, batch)


def _bare_unindexed(engine: sa.Engine, n: int, batch: int) -> Callable[[], None]:
    with engine.begin() as conn:
        for index in exposures.indexes:
            index.drop(conn)
    return _bare(engine, n, batch)


_WAYS: list[Way] = [_writer, _bulk_write, _bare, _bare_0005_indexes, _bare_unindexed]


def _empty(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in (exposures, event_batches):
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"TRUNCATE {table.name}"))
            else:  # SQLite empties a table without a WHERE by dropping its pages
                conn.execute(table.delete())


def _restore_indexes(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {_EVENT_ID_INDEX}"))
        for index in exposures.indexes:
            index.create(conn, checkfirst=True)


def event_rates(folder: Path, postgres_url: str | None) -> dict[str, EventRates]:
    """The rates on a fresh SQLite file in `folder`, and on PostgreSQL when given."""
    rates = {"SQLite": measure(f"sqlite:///{folder / 'events.db'}")}
    if postgres_url:
        rates["PostgreSQL"] = measure(postgres_url)
    return rates


def print_events(rates: dict[str, EventRates]) -> None:
    print(
        "| exposures written per second | writer (record -> committed) | bulk.write, no queue "
        "| bare rows, indexed | bare rows, 0005 indexes (+ unique event_id) | bare rows, no index |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for store, r in rates.items():
        print(
            f"| {store} | {r.writer:,.0f} | {r.bulk_write:,.0f} | {r.bare_indexed:,.0f} "
            f"| {r.bare_0005_indexes:,.0f} | {r.bare_unindexed:,.0f} |"
        )


def event_checks(rates: dict[str, EventRates]) -> list[tuple[str, float, float, bool]]:
    """The events target per store: (name, value, target, lower-is-ok)."""
    return [
        (f"exposures written per second, {store}", r.writer, TARGET, False)
        for store, r in rates.items()
    ]
