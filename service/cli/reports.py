"""`rollout report ...`: analysis notebooks that end in a decision.

Exit codes, for automation: 0 the report decided (any recommendation); 1 the report failed
(notebook error or timeout; the partial executed notebook is kept and named); 2 bad command
line; 3 the report ran but data or inputs were missing, so the decision is `hold`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from service.cli.base import main, progress, settings_of

_WINDOW_HELP = (
    "START/END in ISO 8601 (either side may be empty), or a trailing duration such as "
    "30m, 2h, 7d (the last 30 minutes, ...). Overrides --window-start/--window-end."
)
_TIMEOUT_HELP = "Execution timeout per notebook cell, in seconds."


@main.group()
def report() -> None:
    """Analysis notebooks (papermill, kernel model-rollout) that end in a decision.

    Exit codes: 0 decided, 1 failed (partial notebook kept), 2 usage, 3 hold: data missing.
    """


def window_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--window", default=None, help=_WINDOW_HELP),
            click.option("--window-start", default=None, help="ISO time; default: all events."),
            click.option("--window-end", default=None, help="ISO time; default: now."),
            click.option("--event-store-url", default=None, help="SQLAlchemy URL."),
            click.option(
                "--timeout", default=600.0, show_default=True, type=float, help=_TIMEOUT_HELP
            ),
        ]
    ):
        command = option(command)
    return command


@report.command("ab")
@click.option("--flag", required=True)
@click.option("--control", default="control", show_default=True)
@click.option("--treatment", default="treatment", show_default=True)
@click.option("--metric", default="retained", show_default=True, help="Primary goal metric.")
@click.option("--goal-metrics", default="", help="Further goal metrics, comma-separated.")
@click.option(
    "--correction",
    default="holm",
    show_default=True,
    type=click.Choice(["holm", "benjamini-hochberg", "none"]),
)
@click.option("--guardrails/--no-guardrails", default=True, show_default=True)
@click.option("--sequential", is_flag=True, help="Decide on the always-valid mSPRT p-value.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0.0001, 0.5))
@click.option("--expected-split", default=None, help="e.g. 50:50 (default: equal).")
@click.option("--current-step", default=None, type=float, help="Treatment's current percent.")
@click.option("--ramp-steps", default="5,25,50,100", show_default=True)
@window_options
@click.pass_context
def report_ab(ctx: click.Context, window: str | None, **options: Any) -> None:
    """Run the A/B notebook; write reports/<flag>/<run-id>/ and print the decision."""
    from service.analysis.reports import run_ab_report

    options.update(_window(window, options))
    result = run_ab_report(settings_of(ctx), progress=progress, **options)
    print_report(result)


@report.command("validation")
@click.option("--flag", required=True)
@click.option("--bento", required=True, help="The version under validation, e.g. churn:v2.")
@click.option("--previous", default=None, help="The version it replaced, e.g. churn:v1.")
@click.option("--metric", default="retained", show_default=True, help="Outcome; label = 1 - it.")
@click.option("--max-rows", default=200_000, show_default=True, type=click.IntRange(1))
@window_options
@click.pass_context
def report_validation(ctx: click.Context, window: str | None, **options: Any) -> None:
    """Run the post-rollout validation notebook: keep, investigate or roll back."""
    from service.analysis.reports import run_validation_report

    options.update(_window(window, options))
    result = run_validation_report(settings_of(ctx), progress=progress, **options)
    print_report(result)


def _window(window: str | None, options: dict[str, Any]) -> dict[str, str | None]:
    from service.analysis.reports import parse_window_option
    from service.errors import BadRequest

    try:
        return parse_window_option(window, options)
    except BadRequest as exc:  # a usage error: exit 2 like every other bad option
        raise click.BadParameter(exc.message, param_hint="--window") from exc


def print_report(result: Any, *, exit: bool = True) -> int:
    """Print where the report is and what it decided; exit 3 when data was missing.

    With `exit=False` the exit code is returned instead, for callers with more to print.
    """
    from service.analysis.reports import exit_code

    decision = result.decision
    click.echo(f"report:   {result.html_path}")
    click.echo(f"decision: {decision['recommendation']}  ({result.output_dir / 'decision.json'})")
    for reason in decision.get("reasons", []):
        click.echo(f"  - {reason}")
    code = exit_code(decision)
    if code and exit:
        sys.exit(code)
    return code
