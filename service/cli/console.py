"""`rollout console` (the web console) and `rollout console add-operator` (who may act in it).

Operators are API keys of scope `operate` in the selector's keys file: `add-operator NAME` is
`rollout keys create NAME --scopes operate`.
"""

from __future__ import annotations

import click

from service.cli.base import main, progress, settings_of


@main.group("console", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--selector-url",
    default=None,
    help="The selector the Live page reads (default: ROLLOUT_CONSOLE_SELECTOR_URL, "
    "else http://127.0.0.1:8000).",
)
@click.pass_context
def console(ctx: click.Context, host: str, port: int, selector_url: str | None) -> None:
    """Serve the console: rollouts, a flag's timeline, models, live traffic, operator actions."""
    if ctx.invoked_subcommand is not None:
        return
    from service.console.server import serve
    from service.console.settings import ConsoleSettings

    settings = settings_of(ctx)
    options = ConsoleSettings.load({"selector_url": selector_url} if selector_url else None)
    keys = options.keys_file(settings)
    if options.read_only:
        who = "read-only"
    elif keys.exists():
        who = f"operators from {keys}"
    else:
        who = "no operator yet (rollout keys create NAME --scopes operate)"
    mode = settings.unleash_url or "embedded flags/"
    progress(f"starting the console: flags {mode}, live from {options.selector_url}, {who}")
    config = {"selector_url": selector_url} if selector_url else None
    serve(host, port, config, announce=progress)


@console.command("add-operator")
@click.argument("name")
@click.pass_context
def add_operator(ctx: click.Context, name: str) -> None:
    """Create an operator key NAME (scope `operate`) and print it once (only its hash is kept)."""
    from service.console.settings import ConsoleSettings
    from service.serving.keys import KeyFile

    path = ConsoleSettings.load().keys_file(settings_of(ctx))
    key = KeyFile(path).create(name, ("operate",))
    progress(f"operator '{name}' stored as a hash in {path}; the key is shown once:")
    click.echo(key)
