"""`rollout models ...`: model versions as bentos."""

from __future__ import annotations

import click

from service.cli.base import main, progress, settings_of

# --- models ------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """Model versions packaged as bentos (bentos/)."""


@models.command("build")
@click.pass_context
def models_build(ctx: click.Context) -> None:
    """Train, save and package every declared version as its own bento (idempotent)."""
    from service.models import build_all

    for built in build_all(settings_of(ctx), progress):
        click.echo(f"{built.tag}")
