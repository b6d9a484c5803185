"""Add the fire's engine and connection for the outbox lanes; index history by (scheduled_for, id).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WAITING = "status IN ('pending', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("schedule_fires", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("engine", sa.String(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("connection", sa.String(length=64), nullable=False, server_default="default")
        )
    op.execute(sa.text(_backfill_sql(op.get_bind().dialect.name)))
    with op.batch_alter_table("schedule_fires", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_fires_outbox", postgresql_where=sa.text(WAITING), sqlite_where=sa.text(WAITING)
        )
        batch_op.drop_index("ix_fires_history")
        batch_op.create_index(
            "ix_fires_history", ["schedule_id", "scheduled_for", "id"], unique=False
        )
        batch_op.create_index(
            "ix_fires_history_status",
            ["schedule_id", "status", "scheduled_for", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_fires_lane",
            ["engine", "connection", "next_attempt_at"],
            unique=False,
            postgresql_where=sa.text(WAITING),
            sqlite_where=sa.text(WAITING),
        )


def _backfill_sql(dialect: str) -> str:
    # Fires recorded before this revision carry the values only in their JSON payload.
    if dialect == "postgresql":
        engine, connection = "payload->>'engine'", "payload->>'connection'"
    else:
        engine, connection = (
            "json_extract(payload, '$.engine')",
            "json_extract(payload, '$.connection')",
        )
    return (
        f"UPDATE schedule_fires SET engine = coalesce({engine}, ''), "
        f"connection = coalesce({connection}, 'default')"
    )


def downgrade() -> None:
    with op.batch_alter_table("schedule_fires", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_fires_lane", postgresql_where=sa.text(WAITING), sqlite_where=sa.text(WAITING)
        )
        batch_op.drop_index("ix_fires_history_status")
        batch_op.drop_index("ix_fires_history")
        batch_op.create_index("ix_fires_history", ["schedule_id", "scheduled_for"], unique=False)
        batch_op.create_index(
            "ix_fires_outbox",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text(WAITING),
            sqlite_where=sa.text(WAITING),
        )
        batch_op.drop_column("connection")
        batch_op.drop_column("engine")
