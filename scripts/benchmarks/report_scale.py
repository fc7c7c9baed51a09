"""Time the A/B report end to end (papermill, kernel start included) on a large event store.

Generates `--exposures` exposures (two per user on average, 50:50 control/treatment, a planted
+2 pp effect, 1% errors, latencies) with retained outcomes, bulk-loads them into a fresh
SQLite file or a fresh PostgreSQL database (created and dropped here; the load ends with
ANALYZE, and on PostgreSQL VACUUM, as a store written over days is kept), then runs
`service.analysis.reports.run_ab_report` and prints the timings as JSON.

    .venv/bin/python scripts/benchmarks/report_scale.py --exposures 1000000
    .venv/bin/python scripts/benchmarks/report_scale.py --exposures 10000000 --backend postgresql
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from service.analysis.reports import run_ab_report
from service.config import Settings
from service.harness.unleash_server import PostgresServer
from service.store.events import create_engine

FLAG = "bench-model"
T0 = 1_793_577_600.0
SPAN = 3_600.0  # an hour of traffic
CHUNK = 500_000


def chunks(
    exposures: int, seed: int
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(exposure rows, outcome rows) in chunks; users u0..u(n/2), two exposures on average."""
    rng = np.random.default_rng(seed)
    users = max(exposures // 2, 1)
    done = 0
    while done < exposures:
        size = min(CHUNK, exposures - done)
        user = rng.integers(0, users, size)
        treated = (user * 2654435761 % 1000) < 500  # sticky on the user
        ts = T0 + np.sort(rng.uniform(0, SPAN, size))
        status = np.where(rng.random(size) < 0.01, 503, 200)
        latency = rng.gamma(4.0, 5.0, size)
        converts = rng.random(size) < np.where(treated, 0.32, 0.30)
        exposure_rows = [
            (
                float(t),
                f"r{done + i}",
                FLAG,
                "bench",
                f"u{u}",
                "treatment" if tr else "control",
                "churn:v2" if tr else "churn:v1",
                "strategy_variant",
                int(s),
                float(lat),
                False,
                False,
            )
            for i, (t, u, tr, s, lat) in enumerate(
                zip(ts, user, treated, status, latency, strict=True)
            )
        ]
        outcome_rows = [
            (float(ts[i]) + 1, f"r{done + i}", "retained", 1.0) for i in np.flatnonzero(converts)
        ]
        yield exposure_rows, outcome_rows
        done += size


EXPOSURE_COLUMNS = (
    "ts",
    "request_id",
    "flag",
    "environment",
    "user_id",
    "variant",
    "bento",
    "reason",
    "status",
    "latency_ms",
    "shadow",
    "fallback",
)
OUTCOME_COLUMNS = ("ts", "request_id", "metric", "value")


def load_sqlite(path: Path, exposures: int, seed: int) -> str:
    url = f"sqlite:///{path}"
    create_engine(url).dispose()  # the schema, as the service creates it
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    for exposure_rows, outcome_rows in chunks(exposures, seed):
        conn.executemany(_insert("exposures", EXPOSURE_COLUMNS), exposure_rows)
        conn.executemany(_insert("outcomes", OUTCOME_COLUMNS), outcome_rows)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return url


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def load_postgresql(database: str, exposures: int, seed: int) -> str:
    import psycopg

    server = PostgresServer.from_env()
    server.create_database(database)
    url = server.url(database).replace("postgres://", "postgresql+psycopg://", 1)
    create_engine(url).dispose()
    with psycopg.connect(
        host=server.host, port=server.port, user=server.user, dbname=database
    ) as conn:
        for exposure_rows, outcome_rows in chunks(exposures, seed):
            _copy(conn, "exposures", EXPOSURE_COLUMNS, exposure_rows)
            _copy(conn, "outcomes", OUTCOME_COLUMNS, outcome_rows)
        conn.commit()
        # The table a report meets in service: written over days, so autovacuum has long set
        # its hint bits and visibility map. Right after a bulk load it has not; the first
        # report would pay for dirtying every page of the load, and race autovacuum doing it.
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE)")
    return url


def _copy(conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(str(v) for v in row) + "\n")
    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


def slowest_cells(notebook: Path, n: int = 5) -> dict[str, float]:
    """The notebook's slowest cells (papermill's own timing): where the report's time went."""
    cells = json.loads(notebook.read_text())["cells"]
    timed = [
        (cell["metadata"].get("papermill", {}).get("duration") or 0.0, cell)
        for cell in cells
        if cell["cell_type"] == "code"
    ]
    timed.sort(key=lambda pair: -pair[0])
    return {_first_line(cell): round(seconds, 1) for seconds, cell in timed[:n]}


def _first_line(cell: dict[str, Any]) -> str:
    source = "".join(cell["source"]).strip().splitlines()
    return source[0][:70] if source else "(empty cell)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        database = f"report_scale_{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        if args.backend == "sqlite":
            url = load_sqlite(Path(tmp) / "events.db", args.exposures, args.seed)
        else:
            url = load_postgresql(database, args.exposures, args.seed)
        loaded = time.perf_counter() - started
        try:
            settings = Settings.load({"reports_dir": Path(tmp) / "reports"})
            started = time.perf_counter()
            result = run_ab_report(
                settings,
                flag=FLAG,
                control="control",
                treatment="treatment",
                event_store_url=url,
                progress=lambda _m: None,
            )
            report = time.perf_counter() - started
        finally:
            if args.backend == "postgresql":
                PostgresServer.from_env().drop_database(database)
        decision = result.decision
        print(
            json.dumps(
                {
                    "backend": args.backend,
                    "exposures": args.exposures,
                    "load_seconds": round(loaded, 1),
                    "report_seconds_end_to_end": round(report, 1),
                    "recommendation": decision["recommendation"],
                    "arms": {a["variant"]: a["users"] for a in decision["arms"]},
                    "reasons": decision["reasons"],
                    "slowest_cells_seconds": slowest_cells(result.notebook_path),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
