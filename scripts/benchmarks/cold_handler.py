"""The predict handler in-process, hot and cold, against the proxy floor (no HTTP server).

    .venv/bin/python scripts/benchmarks/cold_handler.py [--calls 300]

Calls the selector's WSGI app (`create_app`, the benchmark's flag, local flags) and the floor's
forwarding app (hop_floor.py) directly, each in front of the same stub bento (hop_floor.py's
`/stub/predict` on granian, one worker). Hot: calls back to back. Cold: each call after 10 ms
asleep, as a worker meets a request at concurrency 1 while the bento's model runs. Prints the
median microseconds per call and the selector minus the floor: the selector's own work, without
any server. The two apps take turns in rounds.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench_flags import flag_folder
from selector import granian_floor_process, request_bodies

from service.processes import free_port
from service.serving.app import create_app

COLD_PAUSE = 0.010  # seconds asleep before each cold call
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def call_times(app: WSGIApp, path: str, bodies: list[bytes], calls: int, pause: float) -> float:
    """Median microseconds of one call of `app` (the whole reply produced)."""
    spent = []
    for i in range(calls):
        if pause:
            time.sleep(pause)
        body = bodies[i % len(bodies)]
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(body),
        }
        started = time.perf_counter_ns()
        b"".join(app(environ, lambda status, headers: None))
        spent.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(spent)


def measure(calls: int, rounds: int = 3) -> dict[str, dict[str, list[float]]]:
    """{"hot"|"cold": {"selector"|"floor": [median us per round]}}."""
    direct, routed = request_bodies()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work, port = Path(tmp), free_port()
        with granian_floor_process(port, work / "stub.log", "http://127.0.0.1:9", 1, 4):
            return _measure(work, f"http://127.0.0.1:{port}/stub", direct, routed, calls, rounds)


def _measure(
    work: Path, url: str, direct: list[bytes], routed: list[bytes], calls: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    os.environ["BENTO_URL"] = url  # the floor's bento: hop_floor reads it when imported
    hop_floor = importlib.import_module("hop_floor")
    config = {
        "data_dir": work / "data",
        "flags_dir": flag_folder(work),
        "unleash_url": None,
        "bento_urls": f"churn:v1={url}",
    }
    app = create_app(config)
    ways = {
        "selector": (app.wsgi_app, "/v1/models/bench/predict", routed),
        "floor": (hop_floor.app, "/predict", direct),
    }
    result: dict[str, dict[str, list[float]]] = {"hot": {}, "cold": {}}
    try:
        for _ in range(rounds):
            for mode, pause, n in (("hot", 0.0, calls * 5), ("cold", COLD_PAUSE, calls)):
                for name, (wsgi, path, bodies) in ways.items():
                    median = call_times(wsgi, path, bodies, n, pause)
                    result[mode].setdefault(name, []).append(median)
    finally:
        app.extensions["selector"].close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="cold calls per app and round")
    args = parser.parse_args()
    result = measure(args.calls)
    head = "| predict in-process, us per call (median of rounds) | selector | floor | difference |"
    print(head)
    print("| --- | --- | --- | --- |")
    for mode, label in (("hot", "hot"), ("cold", "cold (after 10 ms asleep)")):
        selector = statistics.median(result[mode]["selector"])
        floor = statistics.median(result[mode]["floor"])
        print(f"| {label} | {selector:.0f} | {floor:.0f} | {selector - floor:+.0f} |")


if __name__ == "__main__":
    main()
