"""Selector overhead, measured side by side in one run (a benchmark, not a test).

    .venv/bin/python scripts/benchmarks/selector.py [--seconds 5] [--concurrency 1,16,64]

1. `predict` through `rollout serve` (gunicorn, 2 workers) versus the same `bentoml serve`
   bento called directly, by the same client at the same concurrency: p50/p99 latency, the
   latency the selector adds, and the throughput ratio.
2. The routing decision alone (`service.serving.routing.decide`) versus a bare
   `UnleashClient.get_variant` on the same client and flags.
3. Events written per second by the event writer (SQLite by default, `--database-url` for
   PostgreSQL).

Targets (DESIGN.md): added p50 <= 1 ms, p99 <= 3 ms, throughput >= 80% of direct, decision
within 10 us of the bare SDK call. The bento is built into .data/ if needed (idempotent).
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

import urllib3

from service.config import Settings
from service.flags.definitions import load_flags
from service.processes import free_port, selector_process
from service.registry.bento_process import BentoProcess
from service.registry.build import build_all
from service.registry.population import population
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import FlagClient
from service.serving.routing import decide
from service.store.events import Exposure, create_engine
from service.store.writer import EventWriter

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
    """Microseconds per call: our decision vs the bare SDK call, interleaved in rounds."""
    flags = FlagClient(settings, load_flags(flags_dir))
    flags.start()
    catalog = BentoCatalog({"churn:v1": "http://127.0.0.1:9"})
    context = {"userId": "u1", "properties": {"region": "eu"}}
    sdk = flags._client  # the same UnleashClient the decision uses
    ours, bare = [], []
    for _ in range(5):  # alternate, so both see the same machine load
        bare.append(per_call_us(lambda: sdk.get_variant("bench", context), n // 5))
        ours.append(per_call_us(lambda: decide(flags, catalog, "bench", context), n // 5))
    flags.close()
    return statistics.median(ours), statistics.median(bare)


def events_per_second(database_url: str, n: int = 50_000) -> float:
    writer = EventWriter(create_engine(database_url), batch_size=500)
    started = time.perf_counter()
    for i in range(n):
        writer.record(
            Exposure(f"r{i}", "bench", "development", "control", "churn:v1", "x", 200, f"u{i}")
        )
    writer.close(timeout=300)
    return writer.written / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency and target")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--workers", type=int, default=2, help="selector gunicorn workers")
    parser.add_argument("--database-url", default=None, help="event store (default: SQLite)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    base = Settings.load()
    build_all(base, versions=["v1"])
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work = Path(tmp)
        flags_dir = work / "flags"
        flags_dir.mkdir()
        (flags_dir / "context.yaml").write_text((base.flags_dir / "context.yaml").read_text())
        (flags_dir / "bench.yaml").write_text(FLAG)
        rows = serving_rows(base, work, flags_dir, levels, args.seconds, args.workers)
        settings = Settings.load({"data_dir": work / "data", "unleash_url": None})
        ours, bare = routing_cost(flags_dir, settings)
        rate = events_per_second(args.database_url or f"sqlite:///{work / 'events.db'}")
    print_table(rows, ours, bare, rate)


def serving_rows(
    base: Settings, work: Path, flags_dir: Path, levels: list[int], seconds: float, workers: int
) -> list[tuple[int, LoadResult, LoadResult]]:
    direct_bodies, routed_bodies = request_bodies()
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
        threads = max(levels) // workers + 1
        with selector_process(port, work / "selector.log", env, workers, threads) as selector:
            selector.wait_ready(60)
            direct_url = f"{bento.url}/predict"
            routed_url = f"http://127.0.0.1:{port}/v1/models/bench/predict"
            run_load(routed_url, routed_bodies, 4, 1.0)  # warm both pools and the model
            run_load(direct_url, direct_bodies, 4, 1.0)
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            rows = []
            for c in levels:
                direct = run_load(direct_url, direct_bodies, c, seconds)
                before = inside_totals(metrics_url)
                routed = run_load(routed_url, routed_bodies, c, seconds)
                after = inside_totals(metrics_url)
                count = after[2] - before[2]
                inside = ((after[0] - before[0]) - (after[1] - before[1])) / count * 1000
                rows.append((c, direct, replace(routed, inside_ms=inside)))
            return rows


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


def print_table(
    rows: list[tuple[int, LoadResult, LoadResult]], ours: float, bare: float, rate: float
) -> None:
    print(
        "| concurrency | direct p50 / p99 ms | selector p50 / p99 ms | added p50 / p99 ms "
        "| direct req/s | selector req/s | throughput ratio | errors | in-selector ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c, direct, routed in rows:
        d50, d99 = direct.percentile(0.5), direct.percentile(0.99)
        r50, r99 = routed.percentile(0.5), routed.percentile(0.99)
        print(
            f"| {c} | {d50:.2f} / {d99:.2f} | {r50:.2f} / {r99:.2f} "
            f"| {r50 - d50:+.2f} / {r99 - d99:+.2f} | {direct.throughput:.0f} "
            f"| {routed.throughput:.0f} | {routed.throughput / direct.throughput:.0%} "
            f"| {direct.errors} / {routed.errors} | {routed.inside_ms or 0:.2f} |"
        )
    print()
    print("| routing decision (us/call) | bare UnleashClient.get_variant (us/call) | difference |")
    print("| --- | --- | --- |")
    print(f"| {ours:.1f} | {bare:.1f} | {ours - bare:+.1f} |")
    print()
    print(f"events written: {rate:,.0f} per second")
    print(
        "in-selector ms: mean time a predict spends in the selector's own code (routing, "
        "input check, metrics, logging), i.e. the added latency minus the extra HTTP hop"
    )


if __name__ == "__main__":
    main()
