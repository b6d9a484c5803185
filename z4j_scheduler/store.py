"""The scheduler's reads and writes of the shared database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
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


@dataclass(frozen=True, slots=True)
class ReconcileRow(DueRow):
    """A schedule as reconcile reads it: a due row plus its latest fired slot."""

    last_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """The ``scheduler_leader`` row: the latest claimed epoch and who claimed it."""

    epoch: int
    leader_id: str | None
    acquired_at: datetime | None


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


def read_due(
    session: Session, until: datetime, limit: int, after: tuple[datetime, int] | None = None
) -> list[DueRow]:
    """Return enabled schedules whose cursor is at or before ``until``, by cursor and id.

    ``after`` is the (cursor, id) of the last row of a previous page; only
    rows after it are returned.
    """
    statement = select(*_DUE_COLUMNS).where(
        Schedule.enabled.is_(True), Schedule.next_run_at <= until
    )
    if after is not None:
        cursor, schedule_id = after
        statement = statement.where(
            or_(
                Schedule.next_run_at > cursor,
                (Schedule.next_run_at == cursor) & (Schedule.id > schedule_id),
            )
        )
    statement = statement.order_by(Schedule.next_run_at, Schedule.id).limit(limit)
    return [_due_row(row) for row in session.execute(statement)]


def count_due(session: Session, now: datetime) -> int:
    """Return how many enabled schedules have a cursor at or before ``now``."""
    statement = select(func.count()).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
    return int(session.scalar(statement) or 0)


def read_reconcile_batch(session: Session, after_id: int, limit: int) -> list[ReconcileRow]:
    """Return up to ``limit`` enabled schedules with a cursor and an id above ``after_id``, by id.

    Keyset pagination: the caller passes the last id of one batch to get the next.
    """
    statement = (
        select(*_DUE_COLUMNS, Schedule.last_run_at)
        .where(
            Schedule.enabled.is_(True), Schedule.next_run_at.is_not(None), Schedule.id > after_id
        )
        .order_by(Schedule.id)
        .limit(limit)
    )
    return [_reconcile_row(row) for row in session.execute(statement)]


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


def read_leader(session: Session) -> LeaderRecord | None:
    """Return the ``scheduler_leader`` row, or None before the first migration."""
    statement = select(LeaderState.epoch, LeaderState.leader_id, LeaderState.acquired_at).where(
        LeaderState.id == 1
    )
    row = session.execute(statement).one_or_none()
    return None if row is None else LeaderRecord(int(row[0]), row[1], row[2])


# The rows are typed as the model's nullable columns; the queries' filters
# make next_run_at non-null.
def _due_row(row: Any) -> DueRow:
    return DueRow(*row)


def _reconcile_row(row: Any) -> ReconcileRow:
    return ReconcileRow(*row)
