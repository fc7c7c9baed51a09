"""`rollout events migrate | prune | replay`: the event store's schema, retention, spill files."""

from __future__ import annotations

import click

from service.cli.base import main, settings_of


@main.group()
def events() -> None:
    """The event store (ROLLOUT_DATABASE_URL, else SQLite under the data folder)."""


@events.command("migrate")
@click.pass_context
def events_migrate(ctx: click.Context) -> None:
    """Bring the store's schema to the latest revision (Alembic); safe to run again.

    A store made before migrations existed is upgraded in place, its rows kept; on PostgreSQL
    exposures and outcomes become partitioned by month.
    """
    import sqlalchemy as sa

    from service.store.schema import migrate

    engine = sa.create_engine(settings_of(ctx).event_store_url)
    before, after = migrate(engine)
    if before == after:
        click.echo(f"the event store is at revision {after}: nothing to do")
    else:
        click.echo(f"the event store went from revision {before or '(none)'} to {after}")


@events.command("prune")
@click.option(
    "--older-than",
    required=True,
    help="Age of the exposures and outcomes to remove, e.g. 90d, 12h, 2w.",
)
@click.pass_context
def events_prune(ctx: click.Context, older_than: str) -> None:
    """Remove exposures and outcomes older than the age given (whole partitions on PostgreSQL).

    The flag audit trail is kept. Also makes the next months' partitions: run it daily.
    """
    import sqlalchemy as sa

    from service.store.retention import parse_age, prune

    age = parse_age(older_than)
    engine = sa.create_engine(settings_of(ctx).event_store_url)
    click.echo(prune(engine, age).describe())


@events.command("replay")
@click.pass_context
def events_replay(ctx: click.Context) -> None:
    """Write spilled and dead-lettered events to the store; replaying twice writes once."""
    from service.store.events import create_engine
    from service.store.spill import replay, spill_files

    settings = settings_of(ctx)
    files = spill_files(settings.spill_dir, settings.dead_letter_file)
    if not files:
        click.echo("nothing to replay")
        return
    result = replay(create_engine(settings.event_store_url), files, settings.dead_letter_file)
    click.echo(result.describe())
