"""Notify listening schedulers of every schedule change on PostgreSQL.

Revision ID: 0003
Revises: 0002

A created or deleted schedule, and an update that bumps the revision (every
edit through the brain does), sends one notification on the channel
``z4j_schedules`` when its transaction commits. The leader listens on that
channel and re-reads the schedules at once, so it can sleep until its next
slot instead of polling. Fires and cursor moves keep the revision and notify
nobody. SQLite has no notifications; the scheduler polls it instead.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHANNEL = "z4j_schedules"

# PostgreSQL delivers identical notifications of one transaction once, so a
# bulk insert of thousands of schedules wakes a listener once.
_FUNCTION = f"""
CREATE OR REPLACE FUNCTION z4j_notify_schedule_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER schedules_added_or_removed AFTER INSERT OR DELETE OR TRUNCATE"
        " ON schedules FOR EACH STATEMENT EXECUTE FUNCTION z4j_notify_schedule_change()"
    )
    op.execute(
        "CREATE TRIGGER schedules_edited AFTER UPDATE ON schedules FOR EACH ROW"
        " WHEN (OLD.revision IS DISTINCT FROM NEW.revision)"
        " EXECUTE FUNCTION z4j_notify_schedule_change()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS schedules_edited ON schedules")
    op.execute("DROP TRIGGER IF EXISTS schedules_added_or_removed ON schedules")
    op.execute("DROP FUNCTION IF EXISTS z4j_notify_schedule_change()")
