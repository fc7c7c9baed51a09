"""The `rollout` group itself and what every command shares: settings, progress, errors."""

from __future__ import annotations

import sys
import time
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
