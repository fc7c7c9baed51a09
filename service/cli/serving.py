"""`rollout serve`, `rollout simulate`, `rollout demo` and `rollout up`."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from service.cli.base import main, progress, settings_of
from service.cli.reports import print_report
from service.serving.prefork import DEFAULT_SERVER, SERVER_NAMES

# --- serving and traffic -----------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--server",
    default=DEFAULT_SERVER,
    show_default=True,
    envvar="ROLLOUT_SERVER",
    type=click.Choice(SERVER_NAMES),
    help="The HTTP server running the workers (or ROLLOUT_SERVER).",
)
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, workers: int, threads: int, server: str
) -> None:
    """Run the selector under granian or gunicorn (configure with ROLLOUT_* / UNLEASH_*)."""
    from service.serving.server import preflight
    from service.serving.server import serve as run

    what = preflight(settings_of(ctx))
    progress(
        f"starting the selector on {server}: {what}, {workers} worker(s) x {threads} thread(s)"
    )
    run(host, port, workers, threads, server, announce=progress)


@main.command()
@click.option("--selector-url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--flag", default="churn-model", show_default=True)
@click.option("--users", default=20_000, show_default=True, type=click.IntRange(1))
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--first-user",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Start at this user of the population (fresh users for each rollout step).",
)
@click.option(
    "--api-key-env",
    default="ROLLOUT_API_KEY",
    show_default=True,
    help="Variable holding a key (scopes outcomes,predict); without one, a key is created "
    "in ROLLOUT_API_KEYS_FILE for this run and revoked after it.",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    selector_url: str,
    flag: str,
    users: int,
    concurrency: int,
    seed: int,
    first_user: int,
    api_key_env: str,
) -> None:
    """Drive synthetic users through the selector and post their outcomes."""
    import os
    from contextlib import nullcontext

    from service.harness.simulate import simulate as run
    from service.harness.simulate import temporary_key

    given = os.environ.get(api_key_env)
    keys = nullcontext(given) if given else temporary_key(settings_of(ctx).keys_file, "simulate")
    with keys as key:
        summary = run(
            selector_url,
            flag,
            users,
            concurrency=concurrency,
            seed=seed,
            first_user=first_user,
            progress=progress,
            api_key=key,
        )
    click.echo(summary.describe())


# --- the demo ----------------------------------------------------------------------------


@main.command()
@click.option("--users", default=20_000, show_default=True, type=click.IntRange(100))
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256))
@click.pass_context
def demo(ctx: click.Context, users: int, concurrency: int) -> None:
    """The whole loop on embedded flags: build, serve, route, simulate, report, decide."""
    from service.harness.demo import run_demo

    result = run_demo(settings_of(ctx), users=users, concurrency=concurrency, progress=progress)
    code = print_report(result.report, exit=False)
    _show_how_to_apply(ctx, result.report.output_dir / "decision.json")
    _show_validation(result.validation)
    click.echo(f"done in {result.seconds:.0f}s")
    if code:
        sys.exit(code)


def _show_validation(result: Any) -> None:
    """The post-rollout validation's verdict on the treatment's bento, under its own labels."""
    decision = result.decision
    click.echo(f"validation: {decision['recommendation']}  ({result.html_path})")
    for reason in decision.get("reasons", []):
        click.echo(f"  - {reason}")


def _show_how_to_apply(ctx: click.Context, decision_path: Path) -> None:
    """What applying the decision to flags/ would change: the loop's last step, in words."""
    from service.errors import RolloutError
    from service.flags.documents import flag_doc
    from service.rollout.decisions import DecisionFile, flag_definition, plan_decision

    try:
        decision = DecisionFile.load(decision_path)
        definition, _ = flag_definition(decision.flag, settings_of(ctx).flags_dir)
        chosen = plan_decision(decision, definition, flag_doc(definition), changed_at=0)
    except RolloutError as exc:
        click.echo(f"apply:    not applicable as it stands ({exc.message})")
        return
    if chosen is None:
        click.echo("apply:    nothing to change (hold)")
        return
    click.echo(f"apply:    rollout decide apply {decision_path}   # {chosen.describe()}")
    for change in chosen.changes:
        click.echo(f"            {change} (flags/{Path(definition.file).name})")


# --- everything at once, until Ctrl-C -------------------------------------------------------


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--console-port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
def up(ctx: click.Context, port: int, console_port: int) -> None:
    """Build and serve the bentos, start the selector (embedded flags) and the console.

    Stays up until Ctrl-C (or SIGTERM), then stops everything it started.
    """
    from service.harness.up import run_up

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_up(
        settings_of(ctx),
        port=port,
        console_port=console_port,
        stop=stop,
        on_ready=_show_running,
        progress=progress,
    )
    click.echo("stopped: every process `rollout up` started has exited")


def _show_running(running: Any) -> None:
    click.echo(f"selector: {running.selector_url}  (readiness {running.selector_url}/readyz)")
    click.echo(f"console:  {running.console_url}")
    for tag, url in running.bentos.items():
        click.echo(f"bento:    {tag}  {url}")
    click.echo(f"logs:     {running.logs}")
    click.echo(f"try a prediction ({running.flag}):")
    click.echo(f"  {running.curl}")
    click.echo("press Ctrl-C to stop everything", nl=True)
