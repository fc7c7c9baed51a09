"""Selector overhead, measured side by side in one run (a benchmark, not a test).

    .venv/bin/python scripts/benchmarks/selector.py [--seconds 5] [--concurrency 1,16,64]

1. `predict` through `rollout serve` (gunicorn, 2 workers) versus the same `bentoml serve`
   bento called directly, by the same client at the same concurrency: p50/p99 latency, the
   latency the selector adds, and the throughput ratio. Beside them, the floor: a minimal
   WSGI proxy (scripts/benchmarks/hop_floor.py) on the same gunicorn stack, which only forwards
   the bytes, i.e. what one extra HTTP hop costs on this machine; and the same floor on
   granian (a Rust HTTP server), to compare the server stacks with numbers.
2. The routing decision alone (`service.serving.routing.decide`) versus a bare
   `UnleashClient.get_variant` on the same client and flags.
3. Exposures written per second by the event writer, from `record()` to committed rows: SQLite,
   and PostgreSQL with `--postgres-url postgresql+psycopg://.../an_empty_database`; beside it
   the floors below it (scripts/benchmarks/event_rates.py). `--only events` runs this alone.
4. Memory: RSS of each selector worker after warm-up and after the whole run (growth = leak).

Targets (DESIGN.md), printed as met or missed: added p50 <= 0.5 ms and p99 <= 1.5 ms at
concurrency 1; throughput >= 90% of direct at concurrency 16; decision within 10 us of the bare
SDK call; >= 100,000 exposures/s written. The bento is built into .data/ if needed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import urllib3
from event_rates import EventRates, event_checks, event_rates, print_events

from service.config import Settings
from service.flags.definitions import load_flags
from service.processes import ManagedProcess, free_port, selector_process, venv_executable
from service.registry.bento_process import BentoProcess
from service.registry.build import build_all
from service.registry.population import population
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import FlagClient
from service.serving.routing import decide

FLAG = """
flag: bench
default: churn:v1
variants: {control: churn:v1}
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        rollout: 100
        variants: {control: 100}
"""


@dataclass(frozen=True)
class LoadResult:
    latencies_ms: list[float]
    seconds: float
    errors: int
    inside_ms: float | None = None  # mean time inside the selector, minus the bento call

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> LoadResult:
    """`concurrency` threads posting back to back for `seconds`; one shared pool."""
    http = urllib3.PoolManager(maxsize=concurrency, retries=False, timeout=10.0)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = http.request("POST", url, body=bodies[i % len(bodies)], headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            errors[0] += response.status != 200
            i += concurrency

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(latencies, time.perf_counter() - started, errors[0])


def request_bodies(n: int = 500) -> tuple[list[bytes], list[bytes]]:
    """The same records for both targets: the selector's body wraps the bento's."""
    users = population(n, seed=3)
    direct = [json.dumps({"inputs": [u.features()]}).encode() for u in users]
    routed = [
        json.dumps(
            {
                "context": {"userId": u.user_id, "properties": {"region": u.region}},
                "inputs": [u.features()],
            }
        ).encode()
        for u in users
    ]
    return direct, routed


def per_call_us(call: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n * 1e6


def routing_cost(flags_dir: Path, settings: Settings, n: int = 50_000) -> tuple[float, float]:
    """Microseconds per call: our decision vs the bare SDK call, interleaved in rounds.

    Medians over 10 rounds; each round times both back to back, so a busy moment of the shared
    machine hits both alike, and the difference is the median of the rounds' differences.
    """
    flags = FlagClient(settings, load_flags(flags_dir))
    flags.start()
    catalog = BentoCatalog({"churn:v1": "http://127.0.0.1:9"})
    context = {"userId": "u1", "properties": {"region": "eu"}}
    sdk = flags._client  # the same UnleashClient the decision uses
    ours, bare = [], []
    for _ in range(10):
        bare.append(per_call_us(lambda: sdk.get_variant("bench", context), n // 10))
        ours.append(per_call_us(lambda: decide(flags, catalog, "bench", context), n // 10))
    flags.close()
    difference = statistics.median(o - b for o, b in zip(ours, bare, strict=True))
    return statistics.median(bare) + difference, statistics.median(bare)


@dataclass(frozen=True)
class Row:
    concurrency: int
    direct: LoadResult
    floor: LoadResult
    routed: LoadResult
    floor_granian: LoadResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency and target")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--workers", type=int, default=2, help="selector gunicorn workers")
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="also measure events written to this (empty) PostgreSQL database",
    )
    parser.add_argument(
        "--only", choices=["events"], help="run only this section (events: section 3)"
    )
    args = parser.parse_args()
    if args.only == "events":
        with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
            rates = event_rates(Path(tmp), args.postgres_url)
        print_events(rates)
        print_checks(event_checks(rates))
        return
    levels = [int(c) for c in args.concurrency.split(",")]

    base = Settings.load()
    build_all(base, versions=["v1"])
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work = Path(tmp)
        flags_dir = work / "flags"
        flags_dir.mkdir()
        (flags_dir / "context.yaml").write_text((base.flags_dir / "context.yaml").read_text())
        (flags_dir / "bench.yaml").write_text(FLAG)
        rows, memory = serving_rows(base, work, flags_dir, levels, args.seconds, args.workers)
        settings = Settings.load({"data_dir": work / "data", "unleash_url": None})
        ours, bare = routing_cost(flags_dir, settings)
        rates = event_rates(work, args.postgres_url)
    print_table(rows, ours, bare, rates)
    print_memory(memory)
    print_targets(rows, ours, bare, rates)


def serving_rows(
    base: Settings, work: Path, flags_dir: Path, levels: list[int], seconds: float, workers: int
) -> tuple[list[Row], dict[int, tuple[float, float]]]:
    direct_bodies, routed_bodies = request_bodies()
    threads = max(levels) // workers + 1
    with BentoProcess("churn:v1", settings=base, log_path=work / "bento.log") as bento:
        bento.wait_ready(90)
        env = {
            "ROLLOUT_DATA_DIR": str(work / "data"),
            "ROLLOUT_FLAGS_DIR": str(flags_dir),
            "ROLLOUT_BENTO_URLS": f"churn:v1={bento.url}",
            "ROLLOUT_UNLEASH_URL": "",
            "UNLEASH_URL": "",
        }
        port, floor_port = free_port(), free_port()
        floor = hop_floor_process(floor_port, work / "floor.log", bento.url, workers, threads)
        granian_port = free_port()
        granian = granian_floor_process(
            granian_port, work / "granian.log", bento.url, workers, threads
        )
        with (
            selector_process(port, work / "selector.log", env, workers, threads) as selector,
            floor,
            granian,
        ):
            selector.wait_ready(120)
            floor.wait_ready(60)
            granian.wait_ready(60)
            urls = {
                "direct": (f"{bento.url}/predict", direct_bodies),
                "floor": (f"http://127.0.0.1:{floor_port}/predict", direct_bodies),
                "routed": (f"http://127.0.0.1:{port}/v1/models/bench/predict", routed_bodies),
                "floor_granian": (f"http://127.0.0.1:{granian_port}/predict", direct_bodies),
            }
            for url, bodies in urls.values():  # warm every pool and the model
                run_load(url, bodies, 4, 1.0)
            warm = worker_rss(selector)
            rows = [measure(c, urls, seconds, f"http://127.0.0.1:{port}/metrics") for c in levels]
            after = worker_rss(selector)
    return rows, {pid: (warm[pid], after.get(pid, float("nan"))) for pid in warm}


def measure(c: int, urls: dict[str, tuple[str, list[bytes]]], seconds: float, metrics: str) -> Row:
    direct = run_load(*urls["direct"], c, seconds)
    floor = run_load(*urls["floor"], c, seconds)
    floor_granian = run_load(*urls["floor_granian"], c, seconds)
    before = inside_totals(metrics)
    routed = run_load(*urls["routed"], c, seconds)
    after = inside_totals(metrics)
    count = after[2] - before[2]
    inside = ((after[0] - before[0]) - (after[1] - before[1])) / count * 1000
    return Row(c, direct, floor, replace(routed, inside_ms=inside), floor_granian)


def hop_floor_process(
    port: int, log: Path, bento_url: str, workers: int, threads: int
) -> ManagedProcess:
    """gunicorn serving hop_floor.py with the selector's own server settings."""
    command = [
        venv_executable("gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--chdir",
        str(Path(__file__).parent),
        "hop_floor:app",
    ]
    ready = f"http://127.0.0.1:{port}/healthz"
    return ManagedProcess("hop floor", command, ready, log, {"BENTO_URL": bento_url})


def granian_floor_process(
    port: int, log: Path, bento_url: str, workers: int, threads: int
) -> ManagedProcess:
    """The same hop floor on granian (a Rust HTTP server) for the server comparison."""
    command = [venv_executable("granian"), "--interface", "wsgi", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--blocking-threads"]
    command += [str(threads), "--working-dir", str(Path(__file__).parent), "--log-level"]
    command += ["warning", "hop_floor:app"]
    ready = f"http://127.0.0.1:{port}/healthz"
    return ManagedProcess("granian floor", command, ready, log, {"BENTO_URL": bento_url})


def worker_rss(selector: ManagedProcess) -> dict[int, float]:
    """MiB resident per gunicorn worker of the selector (the master's children)."""
    assert selector.process is not None
    children = psutil.Process(selector.process.pid).children(recursive=True)
    return {c.pid: c.memory_info().rss / 2**20 for c in children}


def inside_totals(metrics_url: str) -> tuple[float, float, float]:
    """Seconds spent in predict, seconds spent in bento calls, and predict calls, so far."""
    text = urllib3.request("GET", metrics_url).data.decode()

    def total(name: str) -> float:
        pattern = rf"^{name}(?:{{[^}}]*}})? (\S+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    return (
        total("selector_request_latency_seconds_sum"),
        total("selector_bento_latency_seconds_sum"),
        total("selector_request_latency_seconds_count"),
    )


def _p(result: LoadResult) -> str:
    return f"{result.percentile(0.5):.2f} / {result.percentile(0.99):.2f}"


def _added(result: LoadResult, base: LoadResult) -> str:
    d50 = result.percentile(0.5) - base.percentile(0.5)
    d99 = result.percentile(0.99) - base.percentile(0.99)
    return f"{d50:+.2f} / {d99:+.2f}"


def print_table(rows: list[Row], ours: float, bare: float, rates: dict[str, EventRates]) -> None:
    print(
        "| concurrency | direct p50 / p99 ms | floor (one hop) p50 / p99 ms "
        "| selector p50 / p99 ms | floor adds | selector adds | direct req/s | floor req/s "
        "| selector req/s | selector / direct | errors d/f/s | in-selector ms "
        "| granian floor adds | granian floor req/s |"
    )
    print("| --- " * 14 + "|")
    for row in rows:
        d, f, r = row.direct, row.floor, row.routed
        print(
            f"| {row.concurrency} | {_p(d)} | {_p(f)} | {_p(r)} | {_added(f, d)} "
            f"| {_added(r, d)} | {d.throughput:.0f} | {f.throughput:.0f} | {r.throughput:.0f} "
            f"| {r.throughput / d.throughput:.0%} | {d.errors}/{f.errors}/{r.errors} "
            f"| {r.inside_ms or 0:.2f} | {_added(row.floor_granian, d)} "
            f"| {row.floor_granian.throughput:.0f} |"
        )
    print()
    print("| routing decision (us/call) | bare UnleashClient.get_variant (us/call) | difference |")
    print("| --- | --- | --- |")
    print(f"| {ours:.1f} | {bare:.1f} | {ours - bare:+.1f} |")
    print()
    print_events(rates)
    print(
        "in-selector ms: mean time a predict spends in the selector's own code (routing, "
        "input check, metrics, logging), i.e. the added latency minus the extra HTTP hop"
    )


def print_memory(memory: dict[int, tuple[float, float]]) -> None:
    print()
    for pid, (warm, after) in sorted(memory.items()):
        print(f"selector worker {pid}: RSS {warm:.1f} MiB after warm-up, {after:.1f} MiB after run")


def print_targets(rows: list[Row], ours: float, bare: float, rates: dict[str, EventRates]) -> None:
    """Each DESIGN.md target with the measured figure, met or missed."""
    by_c = {row.concurrency: row for row in rows}
    checks: list[tuple[str, float | None, float, bool]] = []  # name, value, target, lower-is-ok
    if 1 in by_c:
        d, r = by_c[1].direct, by_c[1].routed
        checks.append(("added p50 at c=1 (ms)", r.percentile(0.5) - d.percentile(0.5), 0.5, True))
        checks.append(("added p99 at c=1 (ms)", r.percentile(0.99) - d.percentile(0.99), 1.5, True))
    if 16 in by_c:
        d, r = by_c[16].direct, by_c[16].routed
        checks.append(("throughput vs direct at c=16", r.throughput / d.throughput, 0.9, False))
    checks.append(("decision minus bare get_variant (us)", ours - bare, 10.0, True))
    checks += event_checks(rates)
    errors = sum(row.routed.errors for row in rows)
    print_checks(checks)
    print(f"{'met   ' if errors == 0 else 'MISSED'}  selector errors: {errors} (target 0)")


def print_checks(checks: list[tuple[str, float | None, float, bool]]) -> None:
    print()
    for name, value, target, lower in checks:
        met = value is not None and (value <= target if lower else value >= target)
        sign = "<=" if lower else ">="
        print(f"{'met   ' if met else 'MISSED'}  {name}: {value:.3g} (target {sign} {target:g})")


if __name__ == "__main__":
    main()
