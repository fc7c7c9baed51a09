"""The event writer: never blocks, batches, and loses nothing on close or on a database blip."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import fields
from typing import Any

import sqlalchemy as sa

from service.store.events import (
    SQLITE_PAGE_SIZE,
    Exposure,
    Outcome,
    create_engine,
    exposures,
    outcomes,
)
from service.store.writer import EventWriter


def exposure(i: int) -> Exposure:
    return Exposure(
        request_id=f"r{i}",
        flag="f",
        environment="development",
        variant="control",
        bento="churn:v1",
        reason="strategy_variant",
        status=200,
        user_id=f"u{i}",
    )


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_close_writes_everything_queued_from_many_threads(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = EventWriter(engine, batch_size=100)

    def produce(offset: int) -> None:
        for i in range(1000):
            writer.record(exposure(offset + i))
            writer.record(Outcome(metric="retained", value=1.0, request_id=f"r{offset + i}"))

    threads = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert (count(engine, exposures), count(engine, outcomes)) == (4000, 4000)
    assert writer.written == 8000


def test_a_failed_write_is_retried_not_dropped(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = EventWriter(engine)
    real_begin, failures = engine.begin, []

    def flaky_begin():
        if not failures:
            failures.append(1)
            raise sa.exc.OperationalError("insert", {}, Exception("database is locked"))
        return real_begin()

    engine.begin = flaky_begin  # type: ignore[method-assign]
    writer.record(exposure(1))
    writer.flush()  # retried while running (at close, a failing store is spilled at once)
    writer.close()
    assert failures == [1]
    assert count(engine, exposures) == 1


def test_flush_waits_for_what_was_queued_before_it(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = EventWriter(engine)
    for i in range(50):
        writer.record(exposure(i))
    writer.flush()
    assert count(engine, exposures) == 50
    writer.close()


def test_events_of_a_quiet_moment_share_one_transaction(tmp_path) -> None:
    """At a few requests a second each event used to be a commit of its own, made while its
    request was still answering; the writer now lingers for the next few."""
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = EventWriter(engine, linger=5.0)
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    for i in range(3):
        writer.record(exposure(i))
        time.sleep(0.02)  # requests a few ms apart: without lingering, a commit each
    writer.flush()  # cuts the linger short: it returns as soon as the batch is written
    assert count(engine, exposures) == 3
    assert len(commits) == 1
    writer.close()


def test_a_full_batch_is_written_without_waiting_out_the_linger(tmp_path) -> None:
    """Lingering collects a batch; once one is full there is nothing left to wait for."""
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = EventWriter(engine, batch_size=5, linger=60.0)
    for i in range(4):
        writer.record(exposure(i))
    time.sleep(0.2)  # a batch short of full lingers (60 s here): nothing written yet
    assert count(engine, exposures) == 0
    writer.record(exposure(4))
    deadline = time.monotonic() + 10
    while count(engine, exposures) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count(engine, exposures) == 5
    writer.close()


def test_a_store_from_an_older_version_gains_the_new_columns(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE exposures (id INTEGER PRIMARY KEY, ts FLOAT, "
                "request_id VARCHAR(64), flag VARCHAR(200), environment "
                "VARCHAR(100), variant VARCHAR(200), reason VARCHAR(100), "
                "status INTEGER, shadow BOOLEAN, fallback BOOLEAN)"
            )
        )
    writer = EventWriter(create_engine(url))
    event = exposure(1)
    event.inputs = [{"tenure_months": 3}]
    writer.record(event)
    writer.close()
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.select(exposures.c.inputs)).scalar_one() == [{"tenure_months": 3}]


def test_rows_the_store_refuses_go_to_the_dead_letter_file(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    dead_letter = tmp_path / "dead.jsonl"
    writer = EventWriter(engine, dead_letter=dead_letter)
    bad = exposure(1)
    bad.status = None  # type: ignore[assignment]  # NOT NULL: a permanent refusal
    writer.record(bad)
    writer.record(exposure(2))  # the writer keeps going afterwards
    writer.close()
    [line] = dead_letter.read_text().splitlines()
    assert '"request_id": "r1"' in line and '"table": "exposures"' in line
    assert count(engine, exposures) == 1


def test_workers_creating_a_fresh_store_at_once_all_succeed(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def create() -> None:
        start.wait()
        try:
            create_engine(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _open_store(url: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        create_engine(url).dispose()
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_two_worker_processes_opening_a_fresh_store_at_once_both_start(tmp_path) -> None:
    """`rollout serve`'s workers are processes; two opening a new SQLite store together used to
    meet "database is locked" from the switch to WAL in 77 trials of 100 (gunicorn then stops
    the whole server: a worker that fails to boot)."""
    context = multiprocessing.get_context("fork")
    for trial in range(20):
        url = f"sqlite:///{tmp_path / f'fresh-{trial}.db'}"
        start, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_open_store, args=(url, start, results)) for _ in "ab"]
        for worker in workers:
            worker.start()
        answers = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert answers == ["ok", "ok"], f"trial {trial}: {answers}"
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        engine.dispose()


def test_every_field_of_an_event_lands_in_its_column(tmp_path) -> None:
    """The writer's rows are generated from the column names: each value in its own column."""
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    writer = EventWriter(engine, batch_size=10)
    event = Exposure(
        request_id="req-1", flag="churn", environment="production", variant="treatment",
        bento="churn:v2", reason="strategy_variant", status=503, user_id="u1",
        session_id="s1", region="eu", segment="smb", properties={"plan": "pro"},
        latency_ms=12.5, prediction=0.75, inputs=[{"tenure": 3}], shadow=True,
        fallback=True, error="bento timed out",
    )  # fmt: skip
    outcome = Outcome(metric="retained", value=2.0, request_id="req-1", user_id="u1", flag="f")
    writer.record(event)
    writer.record(outcome)
    writer.close()
    with engine.connect() as conn:
        stored = conn.execute(sa.select(exposures)).one()._mapping
        kept = conn.execute(sa.select(outcomes)).one()._mapping
    for name in (f.name for f in fields(Exposure)):
        assert stored[name] == getattr(event, name), name
    for name in (f.name for f in fields(Outcome)):
        assert kept[name] == getattr(outcome, name), name


def page_size(url: str) -> int:
    with sa.create_engine(url).connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())


def test_a_new_sqlite_store_has_large_pages_and_an_old_one_keeps_its_own(tmp_path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    writer = EventWriter(create_engine(fresh))
    writer.record(exposure(1))
    writer.close()
    assert page_size(fresh) == SQLITE_PAGE_SIZE
    old = f"sqlite:///{tmp_path / 'old.db'}"
    with sa.create_engine(old).begin() as conn:  # a store made before: SQLite's 4 KiB pages
        conn.exec_driver_sql("CREATE TABLE placeholder (x INTEGER)")
    writer = EventWriter(create_engine(old))
    writer.record(exposure(2))
    writer.close()
    assert page_size(old) == 4096
    with sa.create_engine(old).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(exposures)).scalar_one() == 1
