"""Where a predict's time goes inside a selector worker: py-spy under load, by category.

    .venv/bin/python scripts/benchmarks/profile_selector.py [--seconds 20] [--concurrency 1] \
        [--server granian|gunicorn]

Starts the bento and `rollout serve --server ...` with one worker (as `selector.py` does),
drives `predict` at the given concurrency, samples the worker with py-spy (on-CPU samples only:
a thread waiting on the bento's socket is idle and not counted), and prints the CPU milliseconds
per request by category. Each sample goes to the first category met walking from the innermost
frame out, so JSON parsed inside Flask counts as JSON, not as Flask. py-spy needs ptrace (root, or
`--cap-add SYS_PTRACE` in a container).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

import psutil
from bench_flags import FLAG
from selector import SERVERS, request_bodies, run_load

from service.config import Settings
from service.processes import free_port, selector_process, venv_executable
from service.registry.bento_process import BentoProcess
from service.registry.build import build_all

# (category, substrings of a frame "function (file:line)"); the first rule a frame meets wins.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("event writer thread (background)", ("service/store/", "sqlalchemy", "sqlite3", "psycopg")),
    ("JSON decode / encode", ("json/", "orjson", "flask/json")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    (
        "routing (UnleashClient / Yggdrasil)",
        ("UnleashClient", "yggdrasil", "routing.py", "engine_variants.py", "flag_client.py"),
    ),
    ("input contract (fastjsonschema)", ("fastjsonschema", "contracts.py", "<string>")),
    ("input limits (check_tree)", ("serving/limits.py",)),
    ("exposure record (dataclass, queue)", ("store/events.py", "queue.py", "dataclasses.py")),
    (
        "bento call (bento_http, urllib3)",
        ("bento_http.py", "urllib3", "http/client.py", "socket.py"),
    ),
    ("logging", ("logging/",)),
    ("Flask / Werkzeug dispatch", ("flask/", "werkzeug/")),
    (
        "server: gunicorn (HTTP parsing, socket I/O) or granian (WSGI glue)",
        ("gunicorn/", "granian/"),
    ),
    ("selector's own code (other)", ("service/",)),
]


def categorize(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for name, needles in RULES:
            if any(needle in frame for needle in needles):
                return name
    return "interpreter / other"


def profile(seconds: float, concurrency: int, server: str) -> None:
    base = Settings.load()
    build_all(base, versions=["v1"])
    with tempfile.TemporaryDirectory(prefix="rollout-profile-") as tmp:
        work = Path(tmp)
        flags_dir = work / "flags"
        flags_dir.mkdir()
        (flags_dir / "context.yaml").write_text((base.flags_dir / "context.yaml").read_text())
        (flags_dir / "bench.yaml").write_text(FLAG)
        _, routed = request_bodies()
        with BentoProcess("churn:v1", settings=base, log_path=work / "bento.log") as bento:
            bento.wait_ready(90)
            env = {
                "ROLLOUT_DATA_DIR": str(work / "data"),
                "ROLLOUT_FLAGS_DIR": str(flags_dir),
                "ROLLOUT_BENTO_URLS": f"churn:v1={bento.url}",
                "ROLLOUT_UNLEASH_URL": "",
                "UNLEASH_URL": "",
            }
            port = free_port()
            with selector_process(port, work / "selector.log", env, 1, 8, server) as selector:
                selector.wait_ready(120)
                url = f"http://127.0.0.1:{port}/v1/models/bench/predict"
                run_load(url, routed, 4, 1.0)  # warm up
                assert selector.process is not None
                worker = psutil.Process(selector.process.pid).children()[0].pid
                raw = Path(os.environ.get("PROFILE_RAW", work / "profile.txt"))
                rate = 250
                spy_args = ["record", "-p", str(worker), "-r", str(rate), "-d", str(int(seconds))]
                spy_args += ["-f", "raw", "-o", str(raw), "--nonblocking", "--gil"]
                spy = subprocess.Popen(
                    [venv_executable("py-spy"), *spy_args],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                result: list[int] = []
                load = threading.Thread(
                    target=lambda: result.append(
                        len(run_load(url, routed, concurrency, seconds).latencies_ms)
                    )
                )
                load.start()
                load.join()
                spy.wait(timeout=seconds + 60)
                report(raw.read_text(), rate, result[0])


def report(raw: str, rate: int, requests: int) -> None:
    samples: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples[categorize(stack.split(";"))] += int(count)
    total = sum(samples.values())
    print(f"{requests} requests, {total} on-CPU samples at {rate} Hz")
    print("| where | CPU ms per request | share |")
    print("| --- | --- | --- |")
    for name, count in samples.most_common():
        print(f"| {name} | {count / rate / requests * 1000:.3f} | {count / total:.0%} |")
    print(f"| **total** | **{total / rate / requests * 1000:.3f}** | 100% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0])
    args = parser.parse_args()
    profile(args.seconds, args.concurrency, args.server)


if __name__ == "__main__":
    main()
