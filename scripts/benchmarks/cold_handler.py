"""The predict handler in-process, hot and cold, against the proxy floor (no HTTP server).

    .venv/bin/python scripts/benchmarks/cold_handler.py [--calls 300]

Calls the selector's WSGI app (`create_app`, the benchmark's flag, local flags) and the floors'
app (hop_floor.py: the forwarding floor, and the decision floor that also parses the body and
decides the flag) directly, each in front of the same stub bento (hop_floor.py's
`/stub/predict` on granian, one worker). Hot: calls back to back. Cold: each call after 10 ms
asleep, as a worker meets a request at concurrency 1 while the bento's model runs. Prints the
median microseconds per call and each minus the forwarding floor: the selector's own work, and
the least work a deciding proxy does, without any server. The apps take turns in rounds.
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
        statuses: list[str] = []
        started = time.perf_counter_ns()
        b"".join(app(environ, lambda status, headers, seen=statuses: seen.append(status)))
        spent.append((time.perf_counter_ns() - started) / 1000)
        if not statuses[0].startswith("200"):  # a failing call is no measure of a served one
            raise SystemExit(f"error: {path} answered {statuses[0]}")
    return statistics.median(spent)


def measure(calls: int, rounds: int = 3) -> dict[str, dict[str, list[float]]]:
    """{"hot"|"cold": {way: [median us per round]}}."""
    direct, routed = request_bodies()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work, port = Path(tmp), free_port()
        with granian_floor_process(port, work / "stub.log", "http://127.0.0.1:9", 1, 4) as stub:
            stub.wait_ready(60)
            return _measure(work, f"http://127.0.0.1:{port}/stub", direct, routed, calls, rounds)


def _measure(
    work: Path, url: str, direct: list[bytes], routed: list[bytes], calls: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    os.environ["BENTO_URL"] = url  # the floor's bento: hop_floor reads it when imported
    flags = flag_folder(work)
    os.environ["FLAGS_DIR"] = str(flags)  # and the decision floor's flags
    hop_floor = importlib.import_module("hop_floor")
    config = {
        "data_dir": work / "data",
        "flags_dir": flags,
        "unleash_url": None,
        "bento_urls": f"churn:v1={url}",
    }
    app = create_app(config)
    ways = {
        "selector": (app.wsgi_app, "/v1/models/bench/predict", routed),
        "floor": (hop_floor.app, "/predict", direct),
        "decision floor": (hop_floor.app, "/decide", routed),
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
    head = "| predict in-process, us per call (median of rounds) | selector | floor "
    print(head + "| decision floor | selector - floor | decision floor - floor |")
    print("| --- " * 6 + "|")
    for mode, label in (("hot", "hot"), ("cold", "cold (after 10 ms asleep)")):
        us = {name: statistics.median(times) for name, times in result[mode].items()}
        floor, selector, decided = us["floor"], us["selector"], us["decision floor"]
        print(
            f"| {label} | {selector:.0f} | {floor:.0f} | {decided:.0f} "
            f"| {selector - floor:+.0f} | {decided - floor:+.0f} |"
        )


if __name__ == "__main__":
    main()
