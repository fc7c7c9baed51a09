"""Baseline: the schema `create_all` made before migrations (exposures, outcomes, flag_audit).

Idempotent on purpose: a store made by an earlier version already has some or all of these
tables (with every column: earlier versions added missing columns at start-up), and upgrading
it must leave them and their rows alone; an empty database gets all of them.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _absent(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def _indexes(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade() -> None:
    if _absent("exposures"):
        op.create_table(
            "exposures",
            sa.Column("id", ID, primary_key=True),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("flag", sa.String(200), nullable=False),
            sa.Column("environment", sa.String(100), nullable=False),
            sa.Column("user_id", sa.String(200)),
            sa.Column("session_id", sa.String(200)),
            sa.Column("region", sa.String(100)),
            sa.Column("segment", sa.String(100)),
            sa.Column("properties", sa.JSON),
            sa.Column("variant", sa.String(200), nullable=False),
            sa.Column("bento", sa.String(200)),
            sa.Column("reason", sa.String(100), nullable=False),
            sa.Column("status", sa.Integer, nullable=False),
            sa.Column("latency_ms", sa.Float),
            sa.Column("prediction", sa.Float),
            sa.Column("inputs", sa.JSON),
            sa.Column("shadow", sa.Boolean, nullable=False),
            sa.Column("fallback", sa.Boolean, nullable=False),
            sa.Column("error", sa.Text),
        )
        _indexes("exposures", "ts", "request_id", "flag", "user_id")
    if _absent("outcomes"):
        op.create_table(
            "outcomes",
            sa.Column("id", ID, primary_key=True),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("request_id", sa.String(64)),
            sa.Column("user_id", sa.String(200)),
            sa.Column("flag", sa.String(200)),
            sa.Column("metric", sa.String(200), nullable=False),
            sa.Column("value", sa.Float, nullable=False),
        )
        _indexes("outcomes", "ts", "request_id", "user_id", "flag")
    if _absent("flag_audit"):
        op.create_table(
            "flag_audit",
            sa.Column("id", ID, primary_key=True),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("flag", sa.String(200), nullable=False),
            sa.Column("environment", sa.String(100)),
            sa.Column("source", sa.String(20), nullable=False),
            sa.Column("actor", sa.String(200), nullable=False),
            sa.Column("action", sa.String(200), nullable=False),
            sa.Column("what", sa.Text, nullable=False),
            sa.Column("why", sa.Text, nullable=False),
            sa.Column("server", sa.String(500), nullable=False),
            sa.Column("unleash_event_id", sa.BigInteger),
            sa.Column("state", sa.JSON),
            sa.Column("evidence", sa.JSON),
        )
        _indexes("flag_audit", "ts", "flag", "unleash_event_id")


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: restore a backup instead")
