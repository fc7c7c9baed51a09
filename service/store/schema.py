"""The event store's schema under Alembic: `migrate` brings any store to the latest revision.

A store made before migrations existed (tables from `create_all`, no `alembic_version`) is
upgraded in place: the baseline only creates what is missing, later revisions change what is
there. On PostgreSQL one migrator runs at a time (an advisory lock), so several pods starting
at once, or a Job racing an init container, cannot migrate twice.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK = 7_233_017_001  # pg_advisory_lock key of the migrator: any constant of our own


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The latest revision this code knows."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(config).get_current_head())


def current(engine: sa.Engine) -> str | None:
    """The store's revision; None when it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: sa.Engine) -> tuple[str | None, str]:
    """Upgrade the store to the latest revision; (revision before, revision after)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK})
            conn.commit()
        try:
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(_config(conn), "head")
            conn.commit()
            after = MigrationContext.configure(conn).get_current_revision()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK})
                conn.commit()
    return before, str(after)
