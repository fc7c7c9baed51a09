"""The flag decision, hot and cold: the SDK's `get_variant` against the engine shortcut.

    .venv/bin/python scripts/benchmarks/engine_variants.py [--calls 400]

Hot: calls back to back (what a micro-benchmark sees). Cold: each call after 10 ms asleep,
which is how a selector worker meets a request at low concurrency: it has been waiting on the
bento while the bento's model ran on the same cores, and its caches hold the bento's work, not
its own. The two ways take turns call by call, so a busy moment hits both. Both evaluate the
benchmark's flag (`bench`, everyone on churn:v1) on the same FlagClient; the shortcut's answer
is checked against the SDK's first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_flags import flag_folder

from service.config import Settings
from service.flags.definitions import load_flags
from service.serving.engine_variants import EngineVariants
from service.serving.flag_client import FlagClient

COLD_PAUSE = 0.010  # seconds asleep before each cold call


def timings(ways: dict[str, Callable[[], Any]], calls: int, pause: float) -> dict[str, list[float]]:
    """Microseconds per call of each way, the ways taking turns call by call."""
    spent: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(calls):
        for name, call in ways.items():
            if pause:
                time.sleep(pause)
            started = time.perf_counter_ns()
            call()
            spent[name].append((time.perf_counter_ns() - started) / 1000)
    return spent


def decision_costs(calls: int = 400) -> dict[str, dict[str, float]]:
    """{"hot"|"cold": {way: median us}} for the SDK and the shortcut."""
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
        work = Path(tmp)
        settings = Settings.load({"data_dir": work / "data", "unleash_url": None})
        flags = FlagClient(settings, load_flags(flag_folder(work)))
        flags.start()
        try:
            sdk, shortcut = flags._client, EngineVariants.attach(flags._client)
            if shortcut is None:
                raise SystemExit("error: the engine shortcut does not attach to this SDK")
            context = {"userId": "u1", "properties": {"region": "eu"}}
            if shortcut.get_variant("bench", context) != sdk.get_variant("bench", context):
                raise SystemExit("error: the shortcut and the SDK disagree")
            ways = {
                "SDK get_variant": lambda: sdk.get_variant("bench", context),
                "engine shortcut": lambda: shortcut.get_variant("bench", context),
            }
            timings(ways, 200, 0)  # warm-up
            return {
                "hot": _medians(timings(ways, calls * 10, 0)),
                "cold": _medians(timings(ways, calls, COLD_PAUSE)),
            }
        finally:
            flags.close()


def _medians(spent: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in spent.items()}


def print_costs(costs: dict[str, dict[str, float]]) -> None:
    print("| flag decision, us per call (median) | hot | cold (after 10 ms asleep) |")
    print("| --- | --- | --- |")
    for way in costs["hot"]:
        print(f"| {way} | {costs['hot'][way]:.1f} | {costs['cold'][way]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="cold calls per way")
    args = parser.parse_args()
    print_costs(decision_costs(args.calls))


if __name__ == "__main__":
    main()
