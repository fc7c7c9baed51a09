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
from service.errors import RolloutError


def settings_of(ctx: click.Context) -> Settings:
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
