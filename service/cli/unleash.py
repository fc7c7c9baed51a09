"""`rollout unleash up|down|status`: a local Unleash server to try the UI with."""

from __future__ import annotations

import click

from service.cli.base import main, progress, settings_of


@main.group()
def unleash() -> None:
    """A local Unleash (the real server, on PostgreSQL) loaded with flags/."""


@unleash.command("up")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Default: a free one.")
@click.pass_context
def unleash_up(ctx: click.Context, port: int | None) -> None:
    """Start Unleash, apply flags/ to it, print the UI URL and the lines for server mode."""
    from service.harness.local_unleash import UI_LOGIN, up

    local = up(settings_of(ctx), port, progress=progress)
    click.echo(f"Unleash running at {local.url} (pid {local.pid}, log {local.log})")
    click.echo(f"UI:     {local.url}/  login {UI_LOGIN[0]} / {UI_LOGIN[1]}")
    click.echo(f"flags:  {', '.join(local.flags) or 'none'} applied from flags/")
    click.echo("serve from it (tokens are in files, readable only by you):")
    for line in local.exports():
        click.echo(f"  {line}")
    click.echo("  rollout serve")
    click.echo("stop it: rollout unleash down")


@unleash.command("down")
@click.pass_context
def unleash_down(ctx: click.Context) -> None:
    """Stop the local Unleash `up` started and drop its database."""
    from service.harness.local_unleash import down

    local = down(settings_of(ctx))
    click.echo(f"stopped Unleash at {local.url} and dropped database {local.database}")


@unleash.command("status")
@click.pass_context
def unleash_status(ctx: click.Context) -> None:
    """Whether a local Unleash runs, and where."""
    from service.harness.local_unleash import running

    local = running(settings_of(ctx))
    click.echo(f"running at {local.url} (pid {local.pid})" if local else "not running")
