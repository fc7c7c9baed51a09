"""No event lost, even with the store failing at shutdown: real `rollout serve` (granian, two
workers) under steady load, then SIGTERM while the store cannot take writes.

- SQLite made read-only under load (chattr +i as root, chmod otherwise).
- PostgreSQL whose `exposures` table is dropped under load (its rows saved aside first, in the
  same transaction, so the count below can include them).

Every 200 answer is then a row in the store or a line in a spill file, exactly; `/readyz` said
the store was failing; the errors were logged at a bounded rate; `rollout events replay`
brings every spilled event into the store once, and replaying the same files again writes none.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import urllib3
from click.testing import CliRunner
from integration.test_faults import AB_FLAG, SteadyLoad, base_url, start_selector, wait_for

from service.cli import main
from service.harness.unleash_server import PostgresServer
from service.processes import ManagedProcess
from service.store.events import create_engine, exposures

pytestmark = pytest.mark.integration

# A store failure logs its first line at once, then one line per 10 s with a count, per worker.
MAX_STORE_ERROR_LINES = 12


def served_ids(load: SteadyLoad) -> list[str]:
    return [a.body["request_id"] for a in load.answers if a.status == 200]


def spilled(data_dir: Path, folder: str = "events-spill") -> list[dict]:
    rows = []
    for path in sorted((data_dir / folder).glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["table"] == "exposures"]


def stored(engine: sa.Engine, table: sa.Table = exposures) -> list[str]:
    with engine.connect() as conn:
        return [r.request_id for r in conn.execute(sa.select(table.c.request_id))]


def store_reported_failing(process: ManagedProcess) -> bool:
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=5))
    reply = json.loads(http.request("GET", f"{base_url(process)}/readyz").data)
    return reply["event_store"]["status"] == "failing" and reply["status"] == "degraded"


def replay(data_dir: Path, database_url: str | None) -> str:
    env = {"ROLLOUT_DATA_DIR": str(data_dir)}
    if database_url:
        env["ROLLOUT_DATABASE_URL"] = database_url
    result = CliRunner().invoke(main, ["events", "replay"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def fail_writes_then_sigterm(selector: ManagedProcess, break_store, data_dir: Path) -> SteadyLoad:
    with SteadyLoad(base_url(selector), "ab", threads=8) as load:
        load.wait_answers(200)
        break_store()
        load.wait_answers(200)  # served while the store refuses every write
        wait_for(lambda: store_reported_failing(selector), 30, "/readyz reporting the store")
        load.wait_answers(200)
        # SIGTERM: in-flight requests finish, then each worker writes or spills what it holds.
        assert selector.stop() == 0, selector.log_tail()
    assert not [a for a in load.answers if a.status >= 500]
    log = selector.log_file.read_text(errors="replace")
    assert 0 < log.count("the event store failed") <= MAX_STORE_ERROR_LINES, log[-3000:]
    assert spilled(data_dir), "nothing was spilled"
    return load


def check_replay(data_dir: Path, engine: sa.Engine, served: list[str], url: str | None) -> None:
    keep = data_dir.parent / "spill-copy"
    shutil.copytree(data_dir / "events-spill", keep)
    first = replay(data_dir, url)
    assert f"{len(spilled(data_dir.parent, 'spill-copy'))} written" in first, first
    assert sorted(stored(engine)) == sorted(served)  # every one, exactly once
    shutil.rmtree(data_dir / "events-spill")
    shutil.copytree(keep, data_dir / "events-spill")  # the same files again: nothing new
    second = replay(data_dir, url)
    assert " 0 written" in second and "already stored" in second, second
    assert sorted(stored(engine)) == sorted(served)


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made read-only for this test, and writable again afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        path.chmod(0o644)


def test_sigterm_with_a_read_only_sqlite_store_loses_nothing(
    tmp_path, flags_dir, bento_urls, immutable
) -> None:
    data_dir = tmp_path / "data"
    env = {"ROLLOUT_FLAGS_DIR": str(flags_dir("ab.yaml", AB_FLAG))}
    selector = start_selector(tmp_path, bento_urls, env)
    database = data_dir / "events.db"

    def read_only() -> None:
        # Root ignores file modes: the immutable attribute refuses root's writes too. The -shm
        # index stays writable (SQLite maps it; an unwritable map would crash, not refuse).
        for path in (database, database.with_name("events.db-wal")):
            if os.geteuid() == 0:
                subprocess.run(["chattr", "+i", str(path)], check=True)
            else:
                path.chmod(0o444)
            immutable.append(path)

    load = fail_writes_then_sigterm(selector, read_only, data_dir)
    served = served_ids(load)
    engine = sa.create_engine(f"sqlite:///{database}")  # read only: no schema to create
    in_store, in_spill = stored(engine), [r["request_id"] for r in spilled(data_dir)]
    assert len(served) == len(in_store) + len(in_spill)
    assert sorted(served) == sorted(in_store + in_spill)

    for path in immutable:  # the store is back
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)
    check_replay(data_dir, engine, served, None)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = PostgresServer.from_env()
    name = f"rollout_spill_{secrets.token_hex(4)}"
    server.create_database(name)
    yield server.url(name).replace("postgres://", "postgresql+psycopg://", 1)
    server.drop_database(name)


def test_sigterm_with_the_postgresql_table_dropped_loses_nothing(
    tmp_path, flags_dir, bento_urls, postgres_url
) -> None:
    data_dir = tmp_path / "data"
    env = {
        "ROLLOUT_FLAGS_DIR": str(flags_dir("ab.yaml", AB_FLAG)),
        "ROLLOUT_DATABASE_URL": postgres_url,
    }
    selector = start_selector(tmp_path, bento_urls, env)
    engine = create_engine(postgres_url)

    def drop_table() -> None:
        with engine.begin() as conn:  # one transaction: no insert lands between the two
            conn.execute(sa.text("LOCK TABLE exposures IN ACCESS EXCLUSIVE MODE"))
            conn.execute(sa.text("CREATE TABLE exposures_saved AS SELECT * FROM exposures"))
            conn.execute(sa.text("DROP TABLE exposures"))

    load = fail_writes_then_sigterm(selector, drop_table, data_dir)
    served = served_ids(load)
    saved = sa.Table("exposures_saved", sa.MetaData(), autoload_with=engine)
    in_store, in_spill = stored(engine, saved), [r["request_id"] for r in spilled(data_dir)]
    assert len(served) == len(in_store) + len(in_spill)
    assert sorted(served) == sorted(in_store + in_spill)

    # The table is back (replay creates it) with the saved rows; then the spilled ones.
    create_engine(postgres_url)
    with engine.begin() as conn:
        # Not `id`: the new table's sequence hands out its own.
        columns = ", ".join(f'"{c.name}"' for c in exposures.columns if c.name != "id")
        conn.execute(
            sa.text(f"INSERT INTO exposures ({columns}) SELECT {columns} FROM exposures_saved")
        )
    check_replay(data_dir, engine, served, postgres_url)
