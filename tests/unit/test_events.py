"""The event writer: never blocks, batches, and loses nothing on close or on a database blip."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from service.events import EventWriter, Exposure, Outcome, create_engine, exposures, outcomes


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
