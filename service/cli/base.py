"""The `rollout` group itself and what every command shares: settings, progress, errors."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    # Most errors exit 1; a refused command line (errors.ReportRefused) says 2, as click does.
    sys.exit(getattr(exc, "exit_code", 1))


def debugging(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or os.environ.get("ROLLOUT_DEBUG") == "1"


@click.group(cls=RolloutGroup)
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Roll out model versions behind Unleash flags."""
    ctx.ensure_object(dict)["debug"] = debug


@contextmanager
def flag_home(
    ctx: click.Context, flag: str, url: str | None, token_env: str | None = None
) -> Iterator[Any]:
    """(definition, location, store) for FLAG, in server or embedded mode."""
    from service.flags.audit import AuditStore
    from service.flags.state import EmbeddedFlag, ServerFlag
    from service.flags.unleash_admin import (
        UnleashAdmin,
        admin_from_environment,
        token_from_environment,
    )
    from service.rollout.decisions import flag_definition
    from service.store.events import create_engine

    settings = settings_of(ctx)
    definition, flag_set = flag_definition(flag, settings.flags_dir)
    store = AuditStore(create_engine(settings.event_store_url))
    server = url or os.environ.get("UNLEASH_ADMIN_URL") or os.environ.get("UNLEASH_URL")
    if not server:
        yield definition, EmbeddedFlag(definition, flag_set), store
        return
    token = token_from_environment(token_env) if token_env else None
    admin = (
        UnleashAdmin(server.rstrip("/").removesuffix("/api"), token)
        if token
        else admin_from_environment(server)
    )
    with admin:
        yield definition, ServerFlag(admin, definition, flag_set), store
