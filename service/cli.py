"""The `rollout` command line: build models, check flags, serve, simulate, report, demo.

Heavy modules (bentoml, papermill, pandas) are imported inside the commands that need them,
so `rollout --help` and `rollout flags validate` start quickly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from service.config import Settings
from service.errors import RolloutError


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict).setdefault("settings", Settings.load())


def progress(message: str) -> None:
    """One progress line, with the time, on stderr so stdout stays machine-readable."""
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


class RolloutGroup(click.Group):
    """Turns the package's own errors into one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RolloutError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=RolloutGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Roll out model versions behind Unleash flags."""
    ctx.ensure_object(dict)


# --- flags -------------------------------------------------------------------------------


@main.group()
def flags() -> None:
    """Flags as code (flags/*.yaml)."""


@flags.command("validate")
@click.option(
    "--dir",
    "flags_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of flag files (default: flags/).",
)
@click.pass_context
def flags_validate(ctx: click.Context, flags_dir: Path | None) -> None:
    """Check every flag file; print each problem with file, flag and field."""
    from service.errors import FlagDefinitionError
    from service.flag_definitions import load_flags
    from service.models import declared_bentos

    settings = _settings(ctx)
    directory = flags_dir or settings.flags_dir
    try:
        flag_set = load_flags(directory, declared_bentos(settings.bentos_dir))
    except FlagDefinitionError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    for flag in flag_set.flags.values():
        envs = ", ".join(
            f"{e.name}={'on' if e.enabled else 'off'}" for e in flag.environments.values()
        )
        click.echo(f"ok  {flag.name}  default={flag.default_bento}  {envs}  ({flag.file})")


# --- models ------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """Model versions packaged as bentos (bentos/)."""


@models.command("build")
@click.pass_context
def models_build(ctx: click.Context) -> None:
    """Train, save and package every declared version as its own bento (idempotent)."""
    from service.models import build_all

    for built in build_all(_settings(ctx), progress):
        click.echo(f"{built.tag}")


# --- serving and traffic -----------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the selector under gunicorn (configure with ROLLOUT_* / UNLEASH_* variables)."""
    from service.server import serve as run

    run(host, port, workers, threads)


@main.command()
@click.option("--selector-url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--flag", default="churn-model", show_default=True)
@click.option("--users", default=20_000, show_default=True, type=click.IntRange(1))
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--seed", default=7, show_default=True, type=int)
def simulate(selector_url: str, flag: str, users: int, concurrency: int, seed: int) -> None:
    """Drive synthetic users through the selector and post their outcomes."""
    from service.simulate import simulate as run

    summary = run(selector_url, flag, users, concurrency=concurrency, seed=seed, progress=progress)
    click.echo(summary.describe())


# --- reports -----------------------------------------------------------------------------


@main.group()
def report() -> None:
    """Analysis notebooks (papermill) that end in a decision."""


@report.command("ab")
@click.option("--flag", required=True)
@click.option("--control", default="control", show_default=True)
@click.option("--treatment", default="treatment", show_default=True)
@click.option("--metric", default="retained", show_default=True)
@click.option("--window-start", default=None, help="ISO time; default: all events.")
@click.option("--window-end", default=None, help="ISO time; default: now.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0.0001, 0.5))
@click.option("--expected-split", default=None, help="e.g. 50:50 (default: equal).")
@click.option("--event-store-url", default=None, help="SQLAlchemy URL (default: local SQLite).")
@click.pass_context
def report_ab(ctx: click.Context, **options: Any) -> None:
    """Run the A/B notebook; write reports/<flag>/<run-id>/ and print the decision."""
    from service.reports import run_ab_report

    result = run_ab_report(_settings(ctx), progress=progress, **options)
    _print_report(result)


def _print_report(result: Any) -> None:
    decision = result.decision
    click.echo(f"report:   {result.html_path}")
    click.echo(f"decision: {decision['recommendation']}  ({result.output_dir / 'decision.json'})")
    for reason in decision.get("reasons", []):
        click.echo(f"  - {reason}")


# --- the demo ----------------------------------------------------------------------------


@main.command()
@click.option("--users", default=20_000, show_default=True, type=click.IntRange(100))
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256))
@click.pass_context
def demo(ctx: click.Context, users: int, concurrency: int) -> None:
    """The whole loop on embedded flags: build, serve, route, simulate, report, decide."""
    from service.demo import run_demo

    result = run_demo(_settings(ctx), users=users, concurrency=concurrency, progress=progress)
    _print_report(result.report)
    click.echo(f"done in {result.seconds:.0f}s")
