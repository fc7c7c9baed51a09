"""`rollout flags ...`: flags as code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from service.cli.base import main, settings_of

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

    settings = settings_of(ctx)
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
