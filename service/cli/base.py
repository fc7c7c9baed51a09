"""The `rollout` group itself and what every command shares: settings, progress, errors."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from service.config import Settings
from service.errors import FlagDefinitionError, RolloutError


def settings_of(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict).setdefault("settings", Settings.load())


def progress(message: str) -> None:
    """One progress line, with the time, on stderr so stdout stays machine-readable."""
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


MAX_PROBLEMS_SHOWN = 10


class RolloutGroup(click.Group):
    """Every failure is one `error:` line (and maybe a `hint:` line), never a traceback.

    The package's own errors carry a message a person can act on and exit 1. Anything else is a
    bug or an environment problem: its type and message on one line, exit 1, and `--debug`
    (or ROLLOUT_DEBUG=1) shows the traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlagDefinitionError as exc:
            # Each problem is a complete error (file, flag, field), so each gets its own line.
            shown = exc.problems[:MAX_PROBLEMS_SHOWN]
            more = len(exc.problems) - len(shown)
            hint = f"{more} more problem(s); `rollout flags validate` lists them" if more else ""
            _fail(ctx, "\n".join(f"error: {p}" for p in shown), exc, hint=hint)
        except RolloutError as exc:
            _fail(ctx, f"error: {exc.message}", exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            line = f"error: {type(exc).__name__}: {text}".rstrip(": ")
            _fail(ctx, line, exc, hint="run again with --debug for the traceback")


def _fail(ctx: click.Context, line: str, exc: BaseException, hint: str = "") -> None:
    if debugging(ctx):
        raise exc
    click.echo(line, err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(1)


def debugging(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or os.environ.get("ROLLOUT_DEBUG") == "1"


@click.group(cls=RolloutGroup)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Roll out model versions behind Unleash flags."""
    ctx.ensure_object(dict)["debug"] = debug
