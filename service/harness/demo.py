"""`rollout demo`: the whole loop on embedded defaults, no server to set up.

Build the bentos, serve each with `bentoml serve` on its own port, start the selector
(`rollout serve`) on the flags in flags/, drive synthetic users through it, stop the selector
(which writes every buffered event), run the A/B report, then the post-rollout validation report
on the treatment's bento against the control's, and return where they are and what they decided.
Every process started here is stopped on the way out, also on failure or Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.analysis.reports import run_ab_report, run_validation_report
from service.config import Settings
from service.flags.definitions import load_flags
from service.flags.model import DEFAULT_RAMP_STEPS
from service.harness.simulate import SimulationSummary, simulate, temporary_key
from service.processes import free_port, selector_process
from service.registry.bento_process import BentoProcess
from service.registry.build import build_all
from service.serving.catalog import BentoCatalog

FLAG = "churn-model"
EXPECTED_SPLIT = "50:50"  # control:treatment within the flag's ab-test strategy


@dataclass
class DemoResult:
    report: Any  # service.analysis.reports.ReportResult (the A/B test)
    validation: Any  # the post-rollout validation of the treatment's bento
    simulation: SimulationSummary
    seconds: float


def run_demo(
    settings: Settings, *, users: int, concurrency: int, progress: Callable[[str], None]
) -> DemoResult:
    started = time.perf_counter()
    window_start = datetime.now(UTC).isoformat(timespec="seconds")
    progress("step 1/6: building one bento per model version")
    tags = [built.tag for built in build_all(settings, progress)]
    logs = settings.data_dir / "logs"
    with ExitStack() as stack:
        progress(f"step 2/6: serving {', '.join(tags)} with bentoml serve")
        _bentos, catalog = serve_bentos(stack, tags, settings)
        progress("step 3/6: starting the selector (rollout serve, embedded flags from flags/)")
        port = free_port()
        selector = stack.enter_context(
            selector_process(port, logs / "selector.log", selector_env(settings, catalog))
        )
        selector.wait_ready(timeout=60)
        progress(f"step 4/6: simulating {users} users through http://127.0.0.1:{port}")
        key = stack.enter_context(temporary_key(settings.keys_file, "demo"))
        summary = simulate(
            f"http://127.0.0.1:{port}",
            FLAG,
            users,
            concurrency=concurrency,
            progress=progress,
            api_key=key,
        )
        progress(summary.describe())
        selector.stop()  # graceful: every buffered exposure and outcome is written first
    progress("step 5/6: running the A/B report (papermill)")
    flag = load_flags(settings.flags_dir).flags[FLAG]
    report = run_ab_report(
        settings,
        flag=FLAG,
        control="control",
        treatment="treatment",
        window_start=window_start,
        expected_split=EXPECTED_SPLIT,
        current_step=flag.rollout_percent(settings.environment, "treatment"),
        ramp_steps=",".join(
            f"{s:g}" for s in (flag.ramp.steps if flag.ramp else DEFAULT_RAMP_STEPS)
        ),
        progress=progress,
    )
    # The same window, so the live labels and predictions are the ones this demo just made.
    progress("step 6/6: validating the treatment's bento against the control's (papermill)")
    validation = run_validation_report(
        settings,
        flag=FLAG,
        bento=flag.variants["treatment"],
        previous=flag.variants["control"],
        window_start=window_start,
        progress=progress,
    )
    return DemoResult(report, validation, summary, time.perf_counter() - started)


def selector_env(settings: Settings, catalog: BentoCatalog) -> dict[str, str]:
    """The selector's environment: embedded flags, whatever UNLEASH_URL the shell has set."""
    env = {
        "UNLEASH_URL": "",
        "ROLLOUT_UNLEASH_URL": "",
        "ROLLOUT_DATA_DIR": str(settings.data_dir),
        "ROLLOUT_FLAGS_DIR": str(settings.flags_dir),
        "ROLLOUT_ENVIRONMENT": settings.environment,
        # The simulator's key is created in this file: outcomes and predictions need it.
        "ROLLOUT_API_KEYS_FILE": str(settings.keys_file),
        "ROLLOUT_REQUIRE_KEYS": "predict",
        "ROLLOUT_BENTO_URLS": ",".join(f"{t}={u}" for t, u in catalog.endpoints.items()),
    }
    if settings.database_url:
        env["ROLLOUT_DATABASE_URL"] = settings.database_url
    return env


def serve_bentos(
    stack: ExitStack, tags: list[str], settings: Settings
) -> tuple[dict[str, BentoProcess], BentoCatalog]:
    """`bentoml serve` each tag on a free port (stopped when `stack` closes), wait until every
    one answers, and write the catalog the selector reads."""
    bentos = {tag: stack.enter_context(BentoProcess(tag, free_port(), settings)) for tag in tags}
    for process in bentos.values():
        process.wait_ready(timeout=120)
    catalog = BentoCatalog({tag: process.url for tag, process in bentos.items()})
    catalog.save(settings.catalog_file)
    return bentos, catalog
