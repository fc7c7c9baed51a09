"""Exposures lose their unique event_id index; `event_batches` keeps replay exact without it.

Measured with a bare binary COPY of 200,000 exposures into a fresh PostgreSQL table: each of
the four exposure indexes cost about 1 us of backend CPU per row (7.0 us with all of them, 5.8
without the unique event_id one, 3.1 without any). Nothing reads exposures by event_id but
replay, which now looks an event up within its flag and `ts` through (flag, ts), one replay at
a time; a batch the writer sent to the store and then spilled (its commit unconfirmed) is
recognised by its id in `event_batches`, written in the batch's transaction (service.store.spill).
Outcomes keep their unique index (they arrive a request at a time).

On a partitioned PostgreSQL table (0003) the index is (event_id, ts); dropping the parent's
index drops every partition's. Idempotent: each step looks at what is there.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.events import EVENT_ID_LENGTH
from service.store.retention import is_partitioned

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "ux_exposures_event_id"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("event_batches"):
        op.create_table(
            "event_batches",
            sa.Column("batch_id", sa.String(EVENT_ID_LENGTH), primary_key=True),
            sa.Column("ts", sa.Float, nullable=False),
        )
    if INDEX in {ix["name"] for ix in inspector.get_indexes("exposures")}:
        op.drop_index(INDEX, table_name="exposures")


def downgrade() -> None:
    columns = "event_id, ts" if is_partitioned(op.get_bind(), "exposures") else "event_id"
    op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON exposures ({columns})")
    op.drop_table("event_batches")
