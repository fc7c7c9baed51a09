"""`rollout audit <flag>`: who changed a flag, what, when and why, with the traffic around it."""

from __future__ import annotations

import click

from service.cli.base import main, settings_of


@main.command("audit")
@click.argument("flag")
@click.option(
    "--url",
    default=None,
    help="Unleash base URL to read new event-log entries from "
    "(default: UNLEASH_ADMIN_URL, then UNLEASH_URL).",
)
@click.option("--offline", is_flag=True, help="List what is recorded; do not ask Unleash.")
@click.pass_context
def audit(ctx: click.Context, flag: str, url: str | None, offline: bool) -> None:
    """List the recorded changes of FLAG, oldest first, with exposures before and after each."""
    from service.flags.audit import AuditStore
    from service.flags.unleash_admin import admin_from_environment
    from service.store.events import create_engine

    store = AuditStore(create_engine(settings_of(ctx).event_store_url))
    if not offline:
        with admin_from_environment(url) as admin:
            store.record_unleash_events(admin.url, admin.get_events(flag))
    entries = store.entries(flag)
    if not entries:
        click.echo(f"no recorded changes of flag {flag}")
        return
    click.echo(f"{'when':<24} {'who':<28} {'exposures before -> after':<26} what (why)")
    for entry in entries:
        counts = f"{entry.exposures_before} -> {entry.exposures_after}"
        why = f"  (why: {entry.why})" if entry.why else ""
        lines = entry.what.splitlines() or [""]
        click.echo(f"{entry.when:<24} {entry.actor[:28]:<28} {counts:<26} {lines[0]}{why}")
        for line in lines[1:]:
            click.echo(f"{'':<81}{line}")
