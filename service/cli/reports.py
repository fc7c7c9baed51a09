"""`rollout report ...`: analysis notebooks that end in a decision.

Exit codes, for automation: 0 the report decided (any recommendation); 1 the report failed
(notebook error or timeout; the partial executed notebook is kept and named); 2 bad command
line; 3 the report ran but data or inputs were missing, so the decision is `hold`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import click

from service.analysis.parameters import AB_PARAMETERS, VALIDATION_PARAMETERS, Parameter
from service.cli.base import flag_home, main, progress, settings_of

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


def parameter_options(spec: Iterable[Parameter], *, after: Iterable[Any] = ()) -> Any:
    """Click options for every declared report parameter offered on the command line."""

    def decorate(command: Any) -> Any:
        for option in reversed([*(_option(p) for p in spec if p.option), *after]):
            command = option(command)
        return command

    return decorate


def _option(parameter: Parameter) -> Any:
    flag = "--" + parameter.name.replace("_", "-")
    if parameter.kind is bool:
        no = "--no-" + parameter.name.replace("_", "-")
        return click.option(
            f"{flag}/{no}", default=parameter.default, show_default=True, help=parameter.help
        )
    if parameter.required:  # no default at all: click 8.5 takes an explicit None as given
        return click.option(flag, required=True, type=_click_type(parameter), help=parameter.help)
    return click.option(
        flag,
        default=parameter.default,
        show_default=parameter.default not in (None, ""),
        type=_click_type(parameter),
        help=parameter.help,
    )


def _click_type(parameter: Parameter) -> Any:
    if parameter.choices:
        return click.Choice(parameter.choices)
    if parameter.kind is float:
        return click.FloatRange(parameter.minimum, parameter.maximum)
    if parameter.kind is int:
        low, high = parameter.minimum, parameter.maximum
        return click.IntRange(
            None if low is None else int(low), None if high is None else int(high)
        )
    return parameter.kind


# --window, --timeout and --event-store-url belong to the command, not to the notebook (the URL
# reaches the kernel through its environment: a password must not land in report.ipynb).
_COMMAND_OPTIONS = (
    click.option("--window", default=None, help=_WINDOW_HELP),
    click.option("--timeout", default=600.0, show_default=True, type=float, help=_TIMEOUT_HELP),
    click.option(
        "--event-store-url",
        default=None,
        help="SQLAlchemy URL of the event store (default: ROLLOUT_DATABASE_URL or SQLite).",
    ),
)


@report.command("ab")
@parameter_options(AB_PARAMETERS, after=_COMMAND_OPTIONS)
@click.pass_context
def report_ab(ctx: click.Context, window: str | None, **options: Any) -> None:
    """Run the A/B notebook; write reports/<flag>/<run-id>/ and print the decision."""
    from service.analysis.reports import run_ab_report

    options.update(_window(window, options))
    options.update(_from_the_flag(ctx, options["flag"]))
    result = run_ab_report(settings_of(ctx), progress=progress, **options)
    print_report(result)


# What the flag itself says when the command line does not (a cron line gives only --flag).
_FROM_THE_FLAG = (
    "current_step",
    "current_steps",
    "ramp_steps",
    "control",
    "treatment",
    "expected_split",
    "engine",
)


def _from_the_flag(ctx: click.Context, flag: str) -> dict[str, Any]:
    """The flag's step now, schedule, arms and split, read from its home (flags/ or Unleash)
    for each option left at its default, so a decision always knows the step it was made at."""
    from service.errors import UnknownFlag
    from service.rollout.decisions import report_defaults

    unset = [
        name
        for name in _FROM_THE_FLAG
        if ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT)
    ]
    if not unset:
        return {}
    # A/B/n (--treatment b,c): each arm's step and the k-arm split, not the ramp's treatment.
    treatments = [t.strip() for t in str(ctx.params.get("treatment") or "").split(",")]
    several = [t for t in treatments if t] if "treatment" not in unset else []
    try:
        with flag_home(ctx, flag, None) as (definition, location, _store):
            found = report_defaults(definition, location.read(), several)
    except UnknownFlag:
        return {}  # not in flags/: the report names what it cannot find
    if len(several) > 1 and "current_step" not in unset:
        found.pop("current_steps", None)  # --current-step given: every arm is at it
    return {name: found[name] for name in unset if name in found}


@report.command("validation")
@parameter_options(VALIDATION_PARAMETERS, after=_COMMAND_OPTIONS)
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
