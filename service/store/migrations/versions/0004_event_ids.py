"""event_id on exposures and outcomes, unique, so a replayed event is written once.

Stores written before event ids get the column (NULL for their old rows, which replay never
sees again). On a partitioned PostgreSQL table a unique index must hold the partition key, so
there it is (event_id, ts): an event's `ts` is fixed when it happens, so the pair is exactly as
unique as the id. Elsewhere it is (event_id).

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.events import EVENT_ID_LENGTH
from service.store.retention import PARTITIONED, is_partitioned

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in PARTITIONED:
        inspector = sa.inspect(bind)
        if "event_id" not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column("event_id", sa.String(EVENT_ID_LENGTH)))
        columns = "event_id, ts" if is_partitioned(bind, table) else "event_id"
        existing = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table)}
        wanted = [c.strip() for c in columns.split(",")]
        if existing.get(f"ux_{table}_event_id") not in (None, wanted):
            op.drop_index(f"ux_{table}_event_id", table_name=table)
            existing.pop(f"ux_{table}_event_id")
        if f"ux_{table}_event_id" not in existing:
            op.execute(f"CREATE UNIQUE INDEX ux_{table}_event_id ON {table} ({columns})")


def downgrade() -> None:
    for table in PARTITIONED:
        op.drop_index(f"ux_{table}_event_id", table_name=table)
        op.drop_column(table, "event_id")
