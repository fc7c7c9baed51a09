"""PostgreSQL: exposures and outcomes partitioned by month of `ts`, so retention drops partitions.

Each table is rebuilt in one transaction: renamed aside, recreated as `PARTITION BY RANGE (ts)`
with the same columns, defaults and id sequence, one partition per month from the oldest row
(at most 24 months back; older rows and anything outside go to the `_default` partition) to
three months ahead, the rows copied, the old table dropped, the indexes recreated on the parent
(PostgreSQL makes them on every partition). The primary key becomes (id, ts): a partitioned
table's keys must hold the partition column. Readers see the same table name and columns.
SQLite has no partitioning: nothing happens there (prune deletes rows instead).

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.retention import PARTITIONED, create_partitions, month_starts

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXED = {
    "exposures": ("ts", "request_id", "flag", "user_id"),
    "outcomes": ("ts", "request_id", "user_id", "flag"),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in PARTITIONED:
        _partition(bind, table)


def _partition(bind: sa.Connection, table: str) -> None:
    old = f"{table}_unpartitioned"
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE (ts)")
    # The id sequence belonged to the old table: hand it over before the old table goes.
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    oldest = bind.execute(sa.text(f"SELECT min(ts) FROM {old}")).scalar()
    create_partitions(bind, table, month_starts(oldest))
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
    op.execute(f"DROP TABLE {old}")  # its key and index names are free again
    op.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id, ts)")
    for column in INDEXED[table]:
        op.execute(f"CREATE INDEX ix_{table}_{column} ON {table} ({column})")


def downgrade() -> None:
    raise NotImplementedError("partitioning is not undone: restore a backup instead")
