"""The writer never loses an event: a failing store spills to disk (at once when closing), a
full queue spills, replay stores each event once, and store errors are logged at a bounded rate."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from unit.test_events import count, exposure

from service.analysis.page_text import md
from service.config import confined
from service.store.events import Outcome, create_engine, exposures, outcomes
from service.store.rate_limited_log import RateLimitedLog
from service.store.spill import replay, spill_files
from service.store.writer import EventWriter


class BrokenStore:
    """Fails every write as a store that is down or read-only does."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.broken = engine, True

    def begin(self):
        if self.broken:
            raise sa.exc.OperationalError(
                "insert", {}, Exception("attempt to write a readonly database")
            )
        return self.engine.begin()


def writer_on(engine, tmp_path: Path, **kwargs) -> EventWriter:
    return EventWriter(
        engine, spill_dir=tmp_path / "spill", dead_letter=tmp_path / "dead.jsonl", **kwargs
    )


def test_a_store_down_at_close_spills_everything_and_replay_stores_it_once(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    store = BrokenStore(engine)
    writer = writer_on(store, tmp_path, retry_seconds=60)  # retries while running...
    for i in range(300):
        writer.record(exposure(i))
    writer.record(Outcome(metric="retained", value=1.0, request_id="r1"))
    writer.close(timeout=10)  # ...but not while closing: spilled at once
    assert writer.health().failing and "readonly" in writer.health().error
    assert writer.spilled == 301 and count(engine, exposures) == 0
    files = spill_files(tmp_path / "spill", tmp_path / "dead.jsonl")
    copies = tmp_path / "copies"
    shutil.copytree(tmp_path / "spill", copies)
    first = replay(engine, files, tmp_path / "dead.jsonl")
    assert (first.written, first.already_stored) == (301, 0)
    for path in copies.iterdir():  # the same events replayed again: stored once
        shutil.copy(path, tmp_path / "spill" / path.name)
    second = replay(
        engine, spill_files(tmp_path / "spill", tmp_path / "dead.jsonl"), tmp_path / "dead.jsonl"
    )
    assert (second.written, second.already_stored) == (0, 301)
    assert (count(engine, exposures), count(engine, outcomes)) == (300, 1)
    assert list((tmp_path / "spill").iterdir()) == []


def test_a_failing_store_is_spilled_after_the_retry_time_while_running(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    store = BrokenStore(engine)
    writer = writer_on(store, tmp_path, retry_seconds=0)
    writer.record(exposure(1))
    writer.flush()
    assert writer.spilled == 1 and writer.depth == 0  # the queue drains although the store is down
    store.broken = False
    writer.record(exposure(2))
    writer.flush()
    assert not writer.health().failing  # reported healthy again once a write succeeds
    writer.close()
    assert count(engine, exposures) == 1


def test_a_full_queue_spills_instead_of_growing(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    store = BrokenStore(engine)
    writer = writer_on(store, tmp_path, queue_size=5, retry_seconds=60)
    for i in range(200):
        writer.record(exposure(i))
    assert writer.depth <= 5
    writer.close(timeout=10)
    store.broken = False
    result = replay(
        engine, spill_files(tmp_path / "spill", tmp_path / "dead.jsonl"), tmp_path / "dead.jsonl"
    )
    assert result.written == 200 and count(engine, exposures) == 200


def test_refused_rows_are_dead_lettered_and_stay_there_on_replay(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = writer_on(engine, tmp_path)
    bad = exposure(1)
    bad.status = None  # type: ignore[assignment]  # NOT NULL: refused
    writer.record(bad)
    writer.record(exposure(2))
    writer.close()
    assert writer.dead_lettered == 1
    dead = tmp_path / "dead.jsonl"
    result = replay(engine, spill_files(tmp_path / "spill", dead), dead)
    assert result.refused == 1 and len(dead.read_text().splitlines()) == 1


def test_store_errors_are_logged_at_a_bounded_rate_with_a_count(caplog) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR):
        for _ in range(1000):
            limited.error("store", "store down")
        now[0] = 11
        limited.error("store", "store down")
    assert [r.getMessage() for r in caplog.records] == [
        "store down",
        "store down (999 more like this in the last 10s)",
    ]


def test_markdown_text_cannot_open_tags_links_or_code() -> None:
    assert md("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert md("`x`") == "\\`x\\`"
    assert "[" not in md("[x](javascript:alert(1))").replace("\\[", "")


@pytest.mark.parametrize("name", ["../secret", "a/b", "..", "", "x\\y"])
def test_names_that_leave_their_folder_are_refused(tmp_path, name) -> None:
    with pytest.raises(ValueError):
        confined(tmp_path, name, ".json")


def test_a_plain_name_stays_in_its_folder(tmp_path) -> None:
    assert confined(tmp_path, "churn-model", ".json") == tmp_path / "churn-model.json"
