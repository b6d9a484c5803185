"""SQLAlchemy models of the brain's database, shared with the scheduler process.

Every instant is stored in UTC (see ``UTCDateTime``). Schema changes go through
the migrations in ``z4j_brain_plugin/migrations``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from z4j_brain_plugin.models.engine import (
    bulk_insert,
    is_sqlite,
    json_rows,
    make_engine,
    make_session_factory,
    reserve_ids,
)
from z4j_brain_plugin.models.types import UTCDateTime

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Fire",
    "LeaderState",
    "Project",
    "Schedule",
    "bulk_insert",
    "is_sqlite",
    "json_rows",
    "make_engine",
    "make_session_factory",
    "reserve_ids",
]

ENGINES = ("celery", "rq", "dramatiq", "huey", "arq", "taskiq")
KINDS = ("cron", "interval", "one_shot", "solar")
FIRE_STATUSES = ("pending", "dispatched", "failed", "skipped")
ROLES = ("viewer", "operator", "admin")
# PostgreSQL channel notified when a schedule is created, edited or deleted
# (migration 0003 installs the triggers).
SCHEDULE_CHANGES_CHANNEL = "z4j_schedules"

# BigInteger primary keys autoincrement on PostgreSQL; SQLite only does so for INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_schedules_project_name"),
        Index(
            "ix_schedules_due",
            "next_run_at",
            postgresql_where=text("enabled"),
            sqlite_where=text("enabled = 1"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(16))
    # Named broker connection of the engine, from the brain's settings.
    connection: Mapped[str] = mapped_column(String(64), default="default")
    kind: Mapped[str] = mapped_column(String(16))
    expression: Mapped[str] = mapped_column(String(500))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Anchor of interval schedules; unused by the other kinds.
    start_at: Mapped[datetime | None]
    task_name: Mapped[str] = mapped_column(String(500))
    args: Mapped[list[Any]] = mapped_column(default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queue: Mapped[str | None] = mapped_column(String(200))
    catch_up: Mapped[str] = mapped_column(String(32), default="skip")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(64), default="api")
    source_hash: Mapped[str | None] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    last_run_at: Mapped[datetime | None]
    # The cursor: the first slot not yet fired; None when no slot remains.
    next_run_at: Mapped[datetime | None]
    total_runs: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Fire(Base):
    __tablename__ = "schedule_fires"
    __table_args__ = (
        # ``slot`` repeats scheduled_for for schedule and catch-up fires and is
        # NULL for manual and replay fires, which therefore never collide.
        UniqueConstraint("schedule_id", "slot", name="uq_fires_schedule_slot"),
        # Pages of history, newest first, walked by (scheduled_for, id) keys.
        Index("ix_fires_history", "schedule_id", "scheduled_for", "id"),
        Index("ix_fires_history_status", "schedule_id", "status", "scheduled_for", "id"),
        # Each outbox lane claims the due fires of its own broker connection.
        Index(
            "ix_fires_lane",
            "engine",
            "connection",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'failed')"),
            sqlite_where=text("status IN ('pending', 'failed')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime]
    slot: Mapped[datetime | None]
    fired_at: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # The dispatcher's payload, copied from the schedule when the fire is recorded.
    payload: Mapped[dict[str, Any]]
    # The payload's engine and broker connection, repeated as columns for the lane index.
    engine: Mapped[str] = mapped_column(String(16), server_default="")
    connection: Mapped[str] = mapped_column(String(64), server_default="default")
    task_id: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the outbox tries next; NULL once dispatched or failed for good.
    next_attempt_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # UNIQUE, so two entries chained to the same predecessor (a fork) cannot both exist.
    prev_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    hmac: Mapped[str] = mapped_column(String(64), unique=True)


class LeaderState(Base):
    __tablename__ = "scheduler_leader"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    leader_id: Mapped[str | None] = mapped_column(String(200))
    acquired_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # NULL: the token is not bound to one project (admin tokens only).
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
