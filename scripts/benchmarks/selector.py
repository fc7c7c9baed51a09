"""Selector overhead, measured side by side in one run (a benchmark, not a test).

    .venv/bin/python scripts/benchmarks/selector.py [--seconds 5] [--concurrency 1,16,64]

1. `predict` through `rollout serve` (2 workers) on each server it offers (granian, gunicorn)
   versus the same `bentoml serve` bento called directly, by the same client at the same
   concurrency: p50/p99 latency, the latency the selector adds, and the throughput ratio.
   Beside each, three floors on the same server with the same settings
   (scripts/benchmarks/hop_floor.py): a minimal WSGI proxy that only forwards the bytes, through
   the selector's own bento client, i.e. what one extra hop costs on this machine and server
   (the selector minus it is the selector's own work); the decision floor, that proxy plus the
   part no selector can skip (parse the body, decide the flag through the same Unleash engine,
   re-encode the inputs), i.e. the least a proxy that decides per request adds; and a minimal
   echo, the round trip through that server alone. Concurrency 1 is measured twice: with
   everything sharing the machine's cores, and with the bento on a core of its own, as a
   deployment runs the model in its own pod (scripts/benchmarks/placement.py; `--shared-only`
   skips it). The targets are printed for both.
2. The routing decision alone (`service.serving.routing.decide`) versus a bare
   `UnleashClient.get_variant` on the same client and flags; then the flag decision hot and
   cold, the SDK's against the engine shortcut (scripts/benchmarks/engine_variants.py).
   `--only latency` runs 1 and 2.
3. Exposures written per second by the event writer, from `record()` to committed rows: SQLite,
   and PostgreSQL with `--postgres-url postgresql+psycopg://.../an_empty_database`; beside it
   the floors below it (scripts/benchmarks/event_rates.py). `--only events` runs this alone.
4. Memory (scripts/benchmarks/memory_soak.py): RSS of each selector worker after a warm-up
   and along `--soak` requests (100,000) in front of a stub bento; growth over the soak is a
   leak. `--only memory` runs this alone.

Targets (DESIGN.md), printed as met or missed: added p50 <= 0.5 ms and p99 <= 1.5 ms at
concurrency 1; throughput >= 90% of direct at concurrency 16; decision within 10 us of the bare
SDK call; >= 100,000 exposures/s written; no RSS growth over the soak (within 1 MiB). The
bento is built into .data/ if needed.
"""

from __future__ import annotations

import argparse
import contextlib
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
from bench_flags import flag_folder
from engine_variants import decision_costs, print_costs
from event_rates import EventRates, event_checks, event_rates, print_events
from memory_soak import USERS as SOAK_USERS
from memory_soak import Soak, emptied, print_soaks, soak
from placement import own_core

from service.config import Settings
from service.flags.definitions import load_flags
from service.processes import ManagedProcess, free_port, selector_process, venv_executable
from service.registry.bento_process import BentoProcess
from service.registry.build import build_all
from service.registry.population import population
from service.serving.catalog import BentoCatalog
from service.serving.flag_client import FlagClient
from service.serving.routing import decide


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


SERVERS = ("granian", "gunicorn")
# "No growth" with the allocator's noise: a leak of even 100 bytes a request is 10 MiB here.
MEMORY_SLACK_MIB = 1.0  # what `rollout serve --server` offers; the default first


@dataclass(frozen=True)
class Row:
    """One concurrency level: the bento directly, and per server the floor and the selector."""

    concurrency: int
    direct: LoadResult
    floor: dict[str, LoadResult]  # server -> the minimal proxy on it
    decided: dict[str, LoadResult]  # server -> the minimal proxy that also decides the flag
    routed: dict[str, LoadResult]  # server -> `rollout serve --server` on it
    echo: dict[str, LoadResult]  # server -> the minimal echo on it: one hop, no bento
    own_core: bool = False  # the bento pinned to a core of its own (placement.py)

    @property
    def label(self) -> str:
        return (
            f"{self.concurrency}, bento on its own core" if self.own_core else str(self.concurrency)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency and target")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--workers", type=int, default=2, help="selector (and floor) workers")
    parser.add_argument(
        "--shared-only",
        action="store_true",
        help="measure concurrency 1 only with all cores shared, not again with the bento pinned",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="also measure events written to this (empty) PostgreSQL database",
    )
    parser.add_argument(
        "--soak", type=int, default=100_000, help="requests of the memory soak (0: none)"
    )
    parser.add_argument(
        "--only",
        choices=["latency", "events", "memory"],
        help="run only this part (latency: sections 1-2, events: 3, memory: 4)",
    )
    args = parser.parse_args()
    if args.soak < 0 or (args.only == "memory" and args.soak == 0):
        parser.error("--soak must be a positive number of requests")
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work = Path(tmp)
        if args.only == "events":
            rates = event_rates(work, args.postgres_url)
            print_events(rates)
            print_checks(event_checks(rates))
        elif args.only == "memory":
            print_soaks(memory_soaks(work, flag_folder(work), args.soak, args.postgres_url))
        else:
            run_all(args, work)


def run_all(args: argparse.Namespace, work: Path) -> None:
    levels = [int(c) for c in args.concurrency.split(",")]
    base = Settings.load()
    build_all(base, versions=["v1"])
    flags_dir = flag_folder(work)
    rows = serving_rows(
        base, work, flags_dir, levels, args.seconds, args.workers, not args.shared_only
    )
    settings = Settings.load({"data_dir": work / "data", "unleash_url": None})
    ours, bare = routing_cost(flags_dir, settings)
    cold = decision_costs()
    latency_only = args.only == "latency"
    rates = {} if latency_only else event_rates(work, args.postgres_url)
    soaking = args.soak and not latency_only  # before, --only latency ran it and dropped it
    soaks = memory_soaks(work, flags_dir, args.soak, args.postgres_url) if soaking else []
    print_table(rows, ours, bare, rates)
    print_costs(cold)
    print()
    print_soaks(soaks)
    print_targets(rows, ours, bare, rates, soaks)


def selector_env(work: Path, flags_dir: Path, bento_url: str) -> dict[str, str]:
    """A selector of the benchmark: local flags, this bento, its own data folder."""
    return {
        "ROLLOUT_DATA_DIR": str(work / "data"),
        "ROLLOUT_FLAGS_DIR": str(flags_dir),
        "ROLLOUT_BENTO_URLS": f"churn:v1={bento_url}",
        "ROLLOUT_UNLEASH_URL": "",
        "UNLEASH_URL": "",
    }


def memory_soaks(
    work: Path, flags_dir: Path, requests: int, postgres_url: str | None
) -> list[Soak]:
    """Section 4 on each server, in front of one stub bento (hop_floor.py on granian); the
    events go to `postgres_url` (emptied first) when given, else to SQLite."""
    _, routed_bodies = request_bodies(SOAK_USERS)
    stub_port = free_port()
    with granian_floor_process(stub_port, work / "stub.log", "http://127.0.0.1:9", 1, 4) as stub:
        stub.wait_ready(60)
        stub_url = f"http://127.0.0.1:{stub_port}/stub"
        env = selector_env(work, flags_dir, stub_url)
        if postgres_url:
            env["ROLLOUT_DATABASE_URL"] = emptied(postgres_url)
        return [soak(name, work, env, routed_bodies, requests) for name in SERVERS]


def serving_rows(
    base: Settings,
    work: Path,
    flags_dir: Path,
    levels: list[int],
    seconds: float,
    workers: int,
    pin: bool = True,
) -> list[Row]:
    """Every target up at once; each concurrency level runs them one after the other, and
    concurrency 1 again with the bento on a core of its own (`pin`, on a multi-core machine)."""
    direct_bodies, routed_bodies = request_bodies()
    threads = max(levels) // workers + 1
    with BentoProcess("churn:v1", settings=base, log_path=work / "bento.log") as bento:
        bento.wait_ready(90)
        env = selector_env(work, flags_dir, bento.url)
        ports = {name: free_port() for name in SERVERS}
        floor_ports = {name: free_port() for name in SERVERS}
        selectors = {
            name: selector_process(
                ports[name], work / f"selector-{name}.log", env, workers, threads, name
            )
            for name in SERVERS
        }
        floors = {
            name: FLOOR_SERVERS[name](
                floor_ports[name],
                work / f"floor-{name}.log",
                bento.url,
                workers,
                threads,
                flags_dir,
            )
            for name in SERVERS
        }
        with contextlib.ExitStack() as stack:
            for process in [*selectors.values(), *floors.values()]:
                stack.enter_context(process)
            for process in [*selectors.values(), *floors.values()]:
                process.wait_ready(120)
            urls = {("direct", ""): (f"{bento.url}/predict", direct_bodies)}
            for name in SERVERS:
                route = f"http://127.0.0.1:{ports[name]}/v1/models/bench/predict"
                floor = f"http://127.0.0.1:{floor_ports[name]}"
                urls["echo", name] = (f"{floor}/echo", direct_bodies)
                urls["floor", name] = (f"{floor}/predict", direct_bodies)
                urls["decide", name] = (f"{floor}/decide", routed_bodies)
                urls["routed", name] = (route, routed_bodies)
            # Warm every pool and the model at the highest concurrency, so that every worker
            # thread exists (granian starts its threads on demand).
            for url, bodies in urls.values():
                run_load(url, bodies, max(levels), 1.0)
            metrics = {name: f"http://127.0.0.1:{ports[name]}/metrics" for name in SERVERS}
            rows = [measure(c, urls, seconds, metrics) for c in levels]
            if pin and 1 in levels:
                others = [
                    p.process.pid for p in [*selectors.values(), *floors.values()] if p.process
                ]
                with own_core(bento.process.pid, others) as pinned:
                    if pinned:
                        rows.append(replace(measure(1, urls, seconds, metrics), own_core=True))
            return rows


ROUNDS = 5  # at concurrency > 1, each target's time in rounds, interleaved with the others'


def measure(
    c: int,
    urls: dict[tuple[str, str], tuple[str, list[bytes]]],
    seconds: float,
    metrics: dict[str, str],
) -> Row:
    """Every target for `seconds`, interleaved so that the machine's moments hit all alike.

    The machine is shared: its load moves within seconds. Run one target after the other and
    a busy moment lands on one of them. At concurrency 1 the targets take turns request by
    request (so a percentile of each is taken over the same moments, and their difference is
    the hop, not the drift); above it, in ROUNDS rounds each, results pooled.
    """
    before = {name: inside_totals(url) for name, url in metrics.items()}
    if c == 1:
        pooled = run_alternating(urls, seconds)
    else:
        results: dict[tuple[str, str], list[LoadResult]] = {key: [] for key in urls}
        for _ in range(ROUNDS):
            for key, (url, bodies) in urls.items():
                results[key].append(run_load(url, bodies, c, seconds / ROUNDS))
        pooled = {key: _pool(parts) for key, parts in results.items()}
    routed = {}
    for name, url in metrics.items():
        after = inside_totals(url)
        spent, bento, count = (a - b for a, b in zip(after, before[name], strict=True))
        routed[name] = replace(pooled["routed", name], inside_ms=(spent - bento) / count * 1000)
    floor = {name: pooled["floor", name] for name in SERVERS}
    decided = {name: pooled["decide", name] for name in SERVERS}
    echo = {name: pooled["echo", name] for name in SERVERS}
    return Row(c, pooled["direct", ""], floor, decided, routed, echo)


def run_alternating(
    urls: dict[tuple[str, str], tuple[str, list[bytes]]], seconds: float
) -> dict[tuple[str, str], LoadResult]:
    """One client thread, the targets in turn, one request each, for `seconds` per target."""
    http = urllib3.PoolManager(maxsize=1, retries=False, timeout=10.0)
    headers = {"Content-Type": "application/json"}
    latencies: dict[tuple[str, str], list[float]] = {key: [] for key in urls}
    errors = dict.fromkeys(urls, 0)
    deadline = time.perf_counter() + seconds * len(urls)
    i = 0
    while time.perf_counter() < deadline:
        for key, (url, bodies) in urls.items():
            started = time.perf_counter()
            response = http.request("POST", url, body=bodies[i % len(bodies)], headers=headers)
            latencies[key].append((time.perf_counter() - started) * 1000)
            errors[key] += response.status != 200
        i += 1
    # Back to back at concurrency 1: a target's own time is the sum of its latencies.
    return {key: LoadResult(ms, sum(ms) / 1000, errors[key]) for key, ms in latencies.items()}


def _pool(parts: list[LoadResult]) -> LoadResult:
    return LoadResult(
        [ms for part in parts for ms in part.latencies_ms],
        sum(part.seconds for part in parts),
        sum(part.errors for part in parts),
    )


def hop_floor_process(
    port: int, log: Path, bento_url: str, workers: int, threads: int, flags: Path | None = None
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
    return ManagedProcess("hop floor", command, ready, log, floor_env(bento_url, flags))


def granian_floor_process(
    port: int, log: Path, bento_url: str, workers: int, threads: int, flags: Path | None = None
) -> ManagedProcess:
    """The same hop floor on granian, with the selector's granian settings."""
    command = [venv_executable("granian"), "--interface", "wsgi", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--http", "1"]
    command += ["--http1-buffer-size", "65536", "--blocking-threads"]
    command += [str(threads), "--working-dir", str(Path(__file__).parent), "--log-level"]
    command += ["warning", "hop_floor:app"]
    ready = f"http://127.0.0.1:{port}/healthz"
    return ManagedProcess("granian floor", command, ready, log, floor_env(bento_url, flags))


def floor_env(bento_url: str, flags: Path | None) -> dict[str, str]:
    """hop_floor.py's settings: its bento, and the flags its decision floor decides."""
    return {"BENTO_URL": bento_url, **({"FLAGS_DIR": str(flags)} if flags else {})}


FLOOR_SERVERS = {"granian": granian_floor_process, "gunicorn": hop_floor_process}


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
    print_serving(rows)
    print("| routing decision (us/call) | bare UnleashClient.get_variant (us/call) | difference |")
    print("| --- | --- | --- |")
    print(f"| {ours:.1f} | {bare:.1f} | {ours - bare:+.1f} |")
    print()
    print_events(rates)
    print(
        "in-selector ms: mean time a predict spends in the selector's own code (routing, "
        "input check, metrics, logging), i.e. the added latency minus the extra HTTP hop"
    )


def print_serving(rows: list[Row]) -> None:
    """Per concurrency: the bento directly, then per server the floor and the selector."""
    head = "| concurrency | direct p50 / p99 ms | direct req/s "
    for name in SERVERS:
        head += f"| echo on {name} p50 / p99 ms | floor on {name} adds "
        head += f"| decision floor on {name} adds "
        head += f"| selector on {name} adds | {name} selector / direct "
        head += f"| in-selector ms ({name}) "
    print(head + "| errors d/floors/selectors |")
    print("| --- " * (3 + 6 * len(SERVERS) + 1) + "|")
    for row in rows:
        d = row.direct
        line = f"| {row.label} | {_p(d)} | {d.throughput:.0f} "
        for name in SERVERS:
            f, r = row.floor[name], row.routed[name]
            line += f"| {_p(row.echo[name])} "
            line += f"| {_added(f, d)} | {_added(row.decided[name], d)} "
            line += f"| {_added(r, d)} | {r.throughput / d.throughput:.0%} "
            line += f"| {r.inside_ms or 0:.2f} "
        floors = "+".join(
            str(row.floor[n].errors + row.decided[n].errors + row.echo[n].errors) for n in SERVERS
        )
        routed = "+".join(str(row.routed[n].errors) for n in SERVERS)
        print(line + f"| {d.errors}/{floors}/{routed} |")
    print()


def serving_checks(rows: list[Row]) -> list[tuple[str, float | None, float, bool]]:
    """The serving targets per server, each naming that server's floor: what one hop costs."""
    by_c = {row.concurrency: row for row in rows if not row.own_core}
    checks: list[tuple[str, float | None, float, bool]] = []
    for name in SERVERS:
        for row in (r for r in rows if r.concurrency == 1):
            checks += _latency_checks(row, name)
        if 16 in by_c:
            d, f, r = by_c[16].direct, by_c[16].floor[name], by_c[16].routed[name]
            ratio = f.throughput / d.throughput
            label = f"throughput vs direct at c=16, {name} (its floor {ratio:.0%})"
            checks.append((label, r.throughput / d.throughput, 0.9, False))
        errors = sum(row.routed[name].errors for row in rows)
        checks.append((f"selector errors, {name}", errors, 0, True))
    return checks


def _latency_checks(row: Row, name: str) -> list[tuple[str, float | None, float, bool]]:
    """p50 and p99 added at concurrency 1 on `name`, each beside its floors."""
    d, f, r = row.direct, row.floor[name], row.routed[name]
    echo, decided = row.echo[name], row.decided[name]
    where = ", bento on its own core" if row.own_core else ""
    checks: list[tuple[str, float | None, float, bool]] = []
    for q, target in ((0.5, 0.5), (0.99, 1.5)):
        floor = f.percentile(q) - d.percentile(q)
        least = decided.percentile(q) - d.percentile(q)
        label = (
            f"added p{q * 100:.0f} at c=1{where}, {name} (ms; its floor adds {floor:+.2f}, "
            f"the decision floor {least:+.2f}{_beyond(least, target)}, "
            f"an echo alone takes {echo.percentile(q):.2f})"
        )
        checks.append((label, r.percentile(q) - d.percentile(q), target, True))
    return checks


def _beyond(least: float, target: float) -> str:
    """Says so when the least a deciding proxy adds on this machine is already over target."""
    return ": over the target by itself" if least > target else ""


def print_targets(
    rows: list[Row], ours: float, bare: float, rates: dict[str, EventRates], soaks: list[Soak]
) -> None:
    """Each DESIGN.md target with the measured figure, met or missed."""
    checks = serving_checks(rows)  # name, value, target, lower-is-ok
    checks.append(("decision minus bare get_variant (us)", ours - bare, 10.0, True))
    checks += event_checks(rates)
    for result in soaks:
        label = f"RSS growth per worker over {result.checkpoints[-1][0]:,} requests, "
        checks.append((label + f"{result.server} (MiB)", result.growth(), MEMORY_SLACK_MIB, True))
    print_checks(checks)


def print_checks(checks: list[tuple[str, float | None, float, bool]]) -> None:
    print()
    for name, value, target, lower in checks:
        met = value is not None and (value <= target if lower else value >= target)
        sign = "<=" if lower else ">="
        print(f"{'met   ' if met else 'MISSED'}  {name}: {value:.3g} (target {sign} {target:g})")


if __name__ == "__main__":
    main()
