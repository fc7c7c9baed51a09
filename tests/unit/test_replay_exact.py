"""Each exposure is stored once without a unique index on event_id: replayed twice, replayed by
two processes at once, written by an attempt whose commit was never confirmed and then retried
or spilled. On SQLite here; tests/integration/test_replay_postgres.py runs the same checks
(`check_*`) on a real PostgreSQL, and migration 0006 on a store at 0005 with data."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from unit.test_events import count, exposure

from service.store import bulk
from service.store.events import Outcome, create_engine, exposures, outcomes
from service.store.schema import MIGRATIONS, current, head, migrate
from service.store.spill import SpillFile, replay, spill_files
from service.store.writer import EventWriter


class CommitUnconfirmed:
    """Commits each transaction, then fails as a connection lost before the reply does.

    `times`: how many commits answer with that error (then the store behaves).
    """

    def __init__(self, engine: sa.Engine, times: int) -> None:
        self.engine, self.times, self.commits = engine, times, 0

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn
        self.commits += 1
        if self.times > 0:
            self.times -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))


def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "spill", tmp_path / "dead.jsonl"


def replay_all(engine: sa.Engine, tmp_path: Path):
    spill, dead = folders(tmp_path)
    return replay(engine, spill_files(spill, dead), dead)


def spill_twice(tmp_path: Path, events, batch_id: str | None = None) -> None:
    """Two spill files holding the same events (a file replayed again, or a copy of it)."""
    spill, _ = folders(tmp_path)
    for name in ("a.jsonl", "b.jsonl"):
        SpillFile(spill, spill / name).append(events, batch_id)


def check_replayed_twice_stored_once(engine: sa.Engine, tmp_path: Path) -> None:
    events = [exposure(i) for i in range(1200)]  # more than one replay chunk, two flags
    for e in events[::2]:
        e.flag = "other"
    events.append(Outcome(metric="retained", value=1.0, request_id="r1"))
    spill_twice(tmp_path, events)
    first = replay_all(engine, tmp_path)
    assert (first.read, first.written, first.already_stored) == (2402, 1201, 1201)
    spill_twice(tmp_path, events)
    second = replay_all(engine, tmp_path)
    assert (second.written, second.already_stored) == (0, 2402)
    assert (count(engine, exposures), count(engine, outcomes)) == (1200, 1)


def check_concurrent_replays_store_once(engine: sa.Engine, tmp_path: Path) -> None:
    events = [exposure(i) for i in range(3000)]
    spills = [tmp_path / f"spill-{k}" for k in range(4)]
    for folder in spills:
        SpillFile(folder, folder / "events.jsonl").append(events)
    results = []

    def run(folder: Path) -> None:
        dead = folder / "dead.jsonl"
        results.append(replay(engine, spill_files(folder, dead), dead))

    threads = [threading.Thread(target=run, args=(folder,)) for folder in spills]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.written for r in results) == 3000
    assert sum(r.already_stored for r in results) == 3 * 3000
    assert count(engine, exposures) == 3000


def check_an_unconfirmed_commit_retried_is_stored_once(engine: sa.Engine, tmp_path: Path) -> None:
    store = CommitUnconfirmed(engine, times=1)
    spill, dead = folders(tmp_path)
    writer = EventWriter(store, spill_dir=spill, dead_letter=dead, retry_seconds=30)
    for i in range(500):
        writer.record(exposure(i))
    writer.flush()
    writer.close()
    assert store.commits >= 1 and writer.spilled == 0 and writer.dead_lettered == 0
    assert count(engine, exposures) == 500 and writer.written == 500


def check_an_unconfirmed_commit_spilled_is_replayed_once(engine: sa.Engine, tmp_path: Path) -> None:
    store = CommitUnconfirmed(engine, times=10**6)  # every commit lands, none is confirmed
    spill, dead = folders(tmp_path)
    writer = EventWriter(store, spill_dir=spill, dead_letter=dead, retry_seconds=0)
    for i in range(500):
        writer.record(exposure(i))
    writer.close()
    assert writer.spilled == 500 and count(engine, exposures) == 500
    copies = tmp_path / "copies"
    shutil.copytree(spill, copies)
    result = replay_all(engine, tmp_path)
    assert (result.written, result.already_stored) == (0, 500)
    for path in copies.iterdir():  # and again: still once
        shutil.copy(path, spill / path.name)
    assert replay_all(engine, tmp_path).already_stored == 500
    assert count(engine, exposures) == 500


def check_a_replayed_batch_stops_a_late_commit_of_it(engine: sa.Engine, tmp_path: Path) -> None:
    """Spilled at shutdown while still being written: whichever lands second stores nothing."""
    events = [exposure(i) for i in range(50)]
    SpillFile(folders(tmp_path)[0]).append(events, "b" * 32)
    assert replay_all(engine, tmp_path).written == 50
    with pytest.raises(bulk.BatchAlreadyStored), engine.begin() as conn:
        bulk.claim_batch(conn, "b" * 32)  # the writer's attempt at that batch, committing late
        bulk.write(conn, events)
    assert count(engine, exposures) == 50


CHECKS = [
    check_replayed_twice_stored_once,
    check_concurrent_replays_store_once,
    check_an_unconfirmed_commit_retried_is_stored_once,
    check_an_unconfirmed_commit_spilled_is_replayed_once,
    check_a_replayed_batch_stops_a_late_commit_of_it,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_on_sqlite(check, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    migrate(engine)
    check(engine, tmp_path)


def upgrade_to(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def check_a_store_at_0005_with_data_migrates(engine: sa.Engine, tmp_path: Path) -> None:
    """A store at 0005 (unique event_id index) with rows: 0006 drops the index, keeps the rows,
    adds event_batches; replaying events stored before the upgrade stores nothing twice."""
    upgrade_to(engine, "0005")
    events = [exposure(i) for i in range(300)]
    with engine.begin() as conn:
        bulk.write(conn, events)
    assert "ux_exposures_event_id" in {
        ix["name"] for ix in sa.inspect(engine).get_indexes("exposures")
    }
    assert migrate(engine) == ("0005", head()) and current(engine) == "0006"
    inspector = sa.inspect(engine)
    assert "ux_exposures_event_id" not in {ix["name"] for ix in inspector.get_indexes("exposures")}
    assert inspector.has_table("event_batches")
    assert count(engine, exposures) == 300
    SpillFile(folders(tmp_path)[0]).append(events[100:])
    result = replay_all(engine, tmp_path)
    assert (result.written, result.already_stored) == (0, 200)
    assert migrate(engine) == ("0006", "0006")


def test_a_sqlite_store_at_0005_with_data_migrates(tmp_path: Path) -> None:
    check_a_store_at_0005_with_data_migrates(
        sa.create_engine(f"sqlite:///{tmp_path / 'e.db'}"), tmp_path
    )
