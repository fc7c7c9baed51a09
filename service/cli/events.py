"""`rollout events migrate | prune`: the event store's schema and retention."""

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
