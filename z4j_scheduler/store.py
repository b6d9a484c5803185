"""The scheduler's reads and writes of the shared database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from z4j_brain_plugin.models import LeaderState, Schedule


@dataclass(frozen=True, slots=True)
class DueRow:
    """The columns of a due schedule that planning needs."""

    id: int
    revision: int
    kind: str
    expression: str
    timezone: str
    start_at: datetime | None
    catch_up: str
    next_run_at: datetime


_DUE_COLUMNS = (
    Schedule.id,
    Schedule.revision,
    Schedule.kind,
    Schedule.expression,
    Schedule.timezone,
    Schedule.start_at,
    Schedule.catch_up,
    Schedule.next_run_at,
)


def read_due(session: Session, now: datetime, limit: int) -> list[DueRow]:
    """Return enabled schedules whose cursor is at or before ``now``, oldest first."""
    statement = (
        select(*_DUE_COLUMNS)
        .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at)
        .limit(limit)
    )
    return [_due_row(row) for row in session.execute(statement)]


def next_due_at(session: Session, excluded: frozenset[int] = frozenset()) -> datetime | None:
    """Return the earliest cursor of an enabled schedule, skipping ``excluded`` ids."""
    statement = select(func.min(Schedule.next_run_at)).where(Schedule.enabled.is_(True))
    if excluded:
        statement = statement.where(Schedule.id.not_in(excluded))
    return session.scalar(statement)


def claim_epoch(session: Session, leader_id: str, now: datetime) -> int:
    """Increment the fencing epoch for a new leader and return it."""
    statement = (
        update(LeaderState)
        .where(LeaderState.id == 1)
        .values(epoch=LeaderState.epoch + 1, leader_id=leader_id, acquired_at=now)
        .returning(LeaderState.epoch)
    )
    epoch = session.scalar(statement)
    if epoch is None:
        raise RuntimeError("the scheduler_leader row is missing; run `z4j-brain migrate`")
    return int(epoch)


def _due_row(row: Row[tuple[int, int, str, str, str, datetime | None, str, datetime]]) -> DueRow:
    return DueRow(*row)
