"""`rollout rollback <flag> [--to <tag>]`: every user of a flag back on one good bento."""

from __future__ import annotations

import click

from service.cli.base import main, settings_of


@main.command("rollback")
@click.argument("flag")
@click.option("--to", "to", help="the bento to roll back to (default: the last good older one)")
@click.option("--dry-run", is_flag=True, help="print the change, apply nothing")
@click.pass_context
def rollback_command(ctx: click.Context, flag: str, to: str | None, dry_run: bool) -> None:
    """Point FLAG's default and all its strategies' variants at one bento that passed its gates.

    Embedded mode rewrites flags/FLAG.yaml; server mode (UNLEASH_URL) uses the Admin API with
    UNLEASH_ADMIN_TOKEN or UNLEASH_ADMIN_TOKEN_FILE. Each rollback is audited.
    """
    from service.rollout.rollback import rollback

    done, diff = rollback(flag, settings_of(ctx), to, dry_run)
    if diff:
        click.echo(diff, nl=False)
    verb = "would roll back" if dry_run else "rolled back"
    click.echo(f"{verb} {flag} to {done.target} ({done.mode}; {done.reason})")
    for change in done.changes:
        click.echo(f"  {change}")
