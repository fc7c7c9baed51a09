"""`rollout keys create|list|revoke` (who may call the selector) and `rollout events replay`."""

from __future__ import annotations

import json

import click

from service.cli.base import main, progress, settings_of


@main.group()
def keys() -> None:
    """API keys for the selector: only their hashes are stored (ROLLOUT_API_KEYS_FILE)."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scopes",
    default="outcomes",
    show_default=True,
    help="Comma-separated: outcomes, predict, metrics, operate.",
)
@click.pass_context
def keys_create(ctx: click.Context, name: str, scopes: str) -> None:
    """Create key NAME and print it once: the key alone on the last line of stdout."""
    from service.serving.keys import KeyFile, parse_scopes

    key_file = KeyFile(settings_of(ctx).keys_file)
    key = key_file.create(name, parse_scopes(scopes))
    progress(f"key '{name}' ({scopes}) stored as a hash in {key_file.path}; it is shown once:")
    click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tab-separated lines.")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Every key's name, scopes and creation time (never the key or its hash)."""
    from service.serving.keys import KeyFile
    from service.serving.keys import as_json as keys_as_json

    found = KeyFile(settings_of(ctx).keys_file).keys()
    if as_json:
        click.echo(json.dumps(keys_as_json(found), indent=2))
        return
    for key in found:
        click.echo(key.describe())


@keys.command("revoke")
@click.argument("name")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str) -> None:
    """Remove key NAME; running selectors refuse it from their next request on."""
    from service.serving.keys import KeyFile

    key = KeyFile(settings_of(ctx).keys_file).revoke(name)
    click.echo(f"revoked {key.name} ({','.join(key.scopes)})")
