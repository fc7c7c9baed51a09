"""Section 4 of the selector benchmark: memory per selector worker under a long run.

    .venv/bin/python scripts/benchmarks/selector.py --only memory [--soak 100000]

For each server `rollout serve --server` offers: a selector with 2 workers and its default
settings (SQLite event store), in front of a stub bento (hop_floor.py's `/stub/predict`, a
fixed churn prediction: the selector's memory does not depend on the model, and a real one
would take a quarter of an hour for 100,000 requests on this machine). The client sends a
warm-up, then `soak` requests at concurrency 16, and reads each worker's RSS after the warm-up
and at every quarter of the soak. Growth over the soak is the figure to watch: a leak grows
with every request; a bounded cache stops growing once full.

The warm-up first fills the bounded per-worker caches that grow with traffic (the outcome
check's recent exposures, `RecentExposures`: two generations of `size` keys, two keys a
request), then goes on in rounds of 10,000 requests until no worker's RSS moves by 0.25 MiB in
two rounds in a row (at most 200,000 requests): growth after it is what is not bounded.

The requests come from `USERS` distinct users, a population the size `event_rates.py` draws
from, not the 500 of the latency sections: the event store's `user_id` index then takes each
new row on a random page, as it does in service. With 500 users it took them on the few hundred
pages at the end of each user's run, a set that grows as the index splits, so on SQLite each
worker's page cache (at most 8 MiB per connection, `service.store.events`) kept filling for
hundreds of thousands of requests: growth that stops at that bound, but after any warm-up this
benchmark could afford (README, "The memory soak on SQLite").

The event store is SQLite (the default) or, with `--postgres-url`, that PostgreSQL database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import urllib3
from event_rates import USERS  # the soak's requests come from as many users (module doc)

from service.processes import ManagedProcess, free_port, selector_process
from service.store.events import create_engine, exposures, outcomes
from service.store.writer import RecentExposures

CONCURRENCY = 16
CHECKPOINTS = 4
# Requests per worker that fill RecentExposures (two generations of `size` keys, two keys a
# request), plus a margin; times the number of workers, which share the requests.
FILL_PER_WORKER = RecentExposures().size + 5_000
SETTLE_ROUND = 10_000
SETTLED_MIB = 0.25
SETTLED_ROUNDS = 2  # in a row: one quiet round can be luck
MAX_WARM_UP = 200_000


@dataclass(frozen=True)
class Soak:
    """RSS in MiB per worker pid: after warm-up, then at each checkpoint (requests so far)."""

    server: str
    store: str
    warm_up: int
    warm: dict[int, float]
    checkpoints: list[tuple[int, dict[int, float]]]
    errors: int
    seconds: float

    def growth(self) -> float:
        """The most any worker grew from warm-up to the end of the soak, MiB."""
        last = self.checkpoints[-1][1]
        return max(last.get(pid, float("nan")) - rss for pid, rss in self.warm.items())


def emptied(url: str) -> str:
    """`url`, its event tables created (and migrated) if need be and emptied."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(exposures.delete())
        conn.execute(outcomes.delete())
    engine.dispose()
    return url


def run_count(url: str, bodies: list[bytes], concurrency: int, n: int) -> int:
    """Send `n` requests from `concurrency` threads; the number that did not answer 200."""
    http = urllib3.PoolManager(maxsize=concurrency, retries=False, timeout=10.0)
    headers = {"Content-Type": "application/json"}
    errors = [0]
    lock = threading.Lock()
    left = [n]

    def worker(offset: int) -> None:
        i = offset
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            response = http.request("POST", url, body=bodies[i % len(bodies)], headers=headers)
            if response.status != 200:
                errors[0] += 1
            i += concurrency

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors[0]


def worker_rss(process: ManagedProcess) -> dict[int, float]:
    """MiB resident per worker of a pre-forking server (the master's children)."""
    assert process.process is not None
    children = psutil.Process(process.process.pid).children(recursive=True)
    return {c.pid: c.memory_info().rss / 2**20 for c in children}


def soak(
    server: str,
    work: Path,
    env: dict[str, str],
    bodies: list[bytes],
    requests: int,
    workers: int = 2,
) -> Soak:
    """One selector on `server` (`env`: its bento, the stub); see the module doc."""
    port = free_port()
    env = {**env, "ROLLOUT_DATA_DIR": str(work / f"soak-{server}")}
    threads = CONCURRENCY // workers + 1
    log = work / f"soak-{server}.log"
    with selector_process(port, log, env, workers, threads, server) as selector:
        selector.wait_ready(120)
        url = f"http://127.0.0.1:{port}/v1/models/bench/predict"
        warm_up, errors, warm = settle(url, bodies, selector, FILL_PER_WORKER * workers)
        checkpoints = []
        started = time.perf_counter()
        step = requests // CHECKPOINTS
        for k in range(1, CHECKPOINTS + 1):
            errors += run_count(url, bodies, CONCURRENCY, step)
            checkpoints.append((k * step, worker_rss(selector)))
        seconds = time.perf_counter() - started
    store = "PostgreSQL" if env.get("ROLLOUT_DATABASE_URL") else "SQLite"
    return Soak(server, store, warm_up, warm, checkpoints, errors, seconds)


def settle(
    url: str, bodies: list[bytes], selector: ManagedProcess, first: int
) -> tuple[int, int, dict[int, float]]:
    """Warm up until no worker's RSS moves by SETTLED_MIB over SETTLED_ROUNDS rounds of
    SETTLE_ROUND requests in a row (allocator arenas, thread stacks, caches reaching their
    bounds), at most
    MAX_WARM_UP requests: (requests sent, errors, RSS per worker at the end)."""
    sent, errors = first, run_count(url, bodies, CONCURRENCY, first)
    rss, settled = worker_rss(selector), 0
    while sent < MAX_WARM_UP and settled < SETTLED_ROUNDS:
        errors += run_count(url, bodies, CONCURRENCY, SETTLE_ROUND)
        sent += SETTLE_ROUND
        now = worker_rss(selector)
        still = all(abs(now.get(pid, 0.0) - was) < SETTLED_MIB for pid, was in rss.items())
        settled = settled + 1 if still else 0
        rss = now
    return sent, errors, rss


def print_soaks(soaks: list[Soak], say: Callable[[str], None] = print) -> None:
    for result in soaks:
        say(
            f"memory soak, {result.server}, {result.store} store: warm-up {result.warm_up:,} "
            f"requests, then "
            f"{result.checkpoints[-1][0]:,} at concurrency {CONCURRENCY} from {USERS:,} users in "
            f"{result.seconds:.0f} s ({result.errors} errors)"
        )
        head = "| worker | after warm-up (MiB) | "
        head += " | ".join(f"after {n:,}" for n, _ in result.checkpoints)
        say(head + " | growth |")
        say("| --- " * (3 + len(result.checkpoints)) + "|")
        for pid, rss in sorted(result.warm.items()):
            after = [f"{rss_at.get(pid, float('nan')):.1f}" for _, rss_at in result.checkpoints]
            growth = result.checkpoints[-1][1].get(pid, float("nan")) - rss
            say(f"| {pid} | {rss:.1f} | " + " | ".join(after) + f" | {growth:+.1f} |")
        say("")
