"""Record fires from the scheduler in one transaction per frame.

The checks follow the fire protocol: a frame from a deposed leader (older
fencing epoch) writes nothing; a fire planned against an older schedule
revision is rejected with the live row so the leader can re-plan; a slot that
already has a fire row is a no-op that returns the first result; the cursor
moves forward only.

A frame costs a fixed number of statements whatever its size: lock the epoch
row, lock the named schedules, insert the fires, read the status of
duplicates (only when there are some), update the changed schedules, commit.
Rows are read and written with Core statements, not ORM objects, because a
frame carries thousands of fires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import BigInteger, String, Table, any_, bindparam, select, text, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session, sessionmaker

from z4j_brain_plugin.dispatchers.base import DispatchRequest
from z4j_brain_plugin.models import Fire, LeaderState, Schedule, json_rows
from z4j_scheduler.wire.messages import (
    AdvanceResult,
    CursorAdvance,
    FireBatchResult,
    FireOutcome,
    FireRequest,
    FireResult,
    Trigger,
)

Clock = Callable[[], datetime]

FIRES = cast(Table, Fire.__table__)
SCHEDULES = cast(Table, Schedule.__table__)
_SLOT_TRIGGERS = (Trigger.SCHEDULE, Trigger.CATCH_UP)


def utc_now() -> datetime:
    return datetime.now(UTC)


def fire_payload(schedule: Schedule | LockedSchedule) -> dict[str, Any]:
    """Return what the dispatcher needs, copied so later edits do not change a recorded fire."""
    return {
        "engine": schedule.engine,
        "connection": schedule.connection,
        "task_name": schedule.task_name,
        "args": list(schedule.args),
        "kwargs": dict(schedule.kwargs),
        "queue": schedule.queue,
    }


@dataclass(frozen=True, slots=True)
class PendingFire:
    """A recorded fire as an outbox lane sends it, with what it needs to record the outcome."""

    fire_id: str
    engine: str
    connection: str
    scheduled_for: datetime
    attempts: int
    request: DispatchRequest
    # When the fire may be sent: its slot for a fire recorded ahead of it,
    # or the time of its next attempt.
    due_at: datetime


def pending_fire(row: Mapping[str, Any] | RowMapping) -> PendingFire:
    """Build the fire of a ``schedule_fires`` row given by column name.

    The fire recorder calls it on the row it inserts and the outbox on the
    row it claims, so both build the same request from the stored payload.
    """
    payload = row["payload"]
    request = DispatchRequest(
        fire_id=row["id"],
        schedule_id=row["schedule_id"],
        task_name=payload["task_name"],
        args=tuple(payload.get("args", ())),
        kwargs=dict(payload.get("kwargs", {})),
        queue=payload.get("queue"),
    )
    return PendingFire(
        row["id"],
        row["engine"],
        row["connection"],
        row["scheduled_for"],
        row["attempts"],
        request,
        row["next_attempt_at"],
    )


class FireRecorder:
    """The brain's handler of fire frames; ``on_recorded`` receives the new fires after commit."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        on_recorded: Callable[[list[PendingFire]], None],
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._on_recorded = on_recorded
        self._clock = clock

    async def __call__(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> FireBatchResult:
        result, recorded = await anyio.to_thread.run_sync(self.record_fires, epoch, fires, advances)
        if recorded:
            self._on_recorded(recorded)
        return result

    def record(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> tuple[FireBatchResult, list[str]]:
        """Write one frame in one transaction; return the result and the ids of new fires."""
        result, recorded = self.record_fires(epoch, fires, advances)
        return result, [fire.fire_id for fire in recorded]

    def record_fires(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> tuple[FireBatchResult, list[PendingFire]]:
        """Write one frame in one transaction; return the result and the new fires, committed."""
        with self._sessions.begin() as session:
            current = _locked_epoch(session)
            if epoch < current:
                return FireBatchResult((), (), stale_epoch=True, current_epoch=current), []
            ids = {fire.schedule_id for fire in fires} | {move.schedule_id for move in advances}
            writer = _FrameWriter(session, _lock_schedules(session, ids), epoch, self._clock())
            fire_results = writer.write_fires(fires)
            advance_results = tuple(writer.advance(move) for move in advances)
            writer.save_schedules()
            return FireBatchResult(fire_results, advance_results, False, current), writer.inserted


@dataclass(slots=True)
class LockedSchedule:
    """The columns of a schedule row locked for one frame, changed in place and saved once."""

    id: int
    revision: int
    enabled: bool
    kind: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    total_runs: int
    engine: str
    connection: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    changed: bool = False


_LOCKED_COLUMNS = (
    SCHEDULES.c.id,
    SCHEDULES.c.revision,
    SCHEDULES.c.enabled,
    SCHEDULES.c.kind,
    SCHEDULES.c.next_run_at,
    SCHEDULES.c.last_run_at,
    SCHEDULES.c.total_runs,
    SCHEDULES.c.engine,
    SCHEDULES.c.connection,
    SCHEDULES.c.task_name,
    SCHEDULES.c.args,
    SCHEDULES.c.kwargs,
    SCHEDULES.c.queue,
)


class _FrameWriter:
    def __init__(
        self, session: Session, schedules: dict[int, LockedSchedule], epoch: int, now: datetime
    ) -> None:
        self.session = session
        self.schedules = schedules
        self.epoch = epoch
        self.now = now
        self.inserted: list[PendingFire] = []

    def write_fires(self, fires: Sequence[FireRequest]) -> tuple[FireResult, ...]:
        rejections = {fire.fire_id: self._rejection(fire) for fire in fires}
        accepted = [fire for fire in fires if rejections[fire.fire_id] is None]
        rows = {fire.fire_id: self._row(fire) for fire in accepted}
        inserted = set(self._insert(list(rows.values())))
        self.inserted.extend(
            pending_fire(row) for fire_id, row in rows.items() if fire_id in inserted
        )
        statuses = self._existing_statuses(
            [f.fire_id for f in accepted if f.fire_id not in inserted]
        )
        results = []
        for fire in fires:
            rejection = rejections[fire.fire_id]
            if rejection is not None:
                results.append(rejection)
            elif fire.fire_id in inserted:
                self._advance_after_fire(fire)
                results.append(FireResult(fire.fire_id, FireOutcome.ACCEPTED, "pending"))
            else:
                status = statuses.get(fire.fire_id, "")
                results.append(FireResult(fire.fire_id, FireOutcome.DUPLICATE, status))
        return tuple(results)

    def advance(self, move: CursorAdvance) -> AdvanceResult:
        schedule = self.schedules.get(move.schedule_id)
        if schedule is None:
            return AdvanceResult(move.schedule_id, applied=False)
        if schedule.revision != move.revision:
            return AdvanceResult(move.schedule_id, False, schedule.revision, schedule.next_run_at)
        _move_cursor(schedule, move.next_cursor)
        return AdvanceResult(move.schedule_id, applied=True)

    def save_schedules(self) -> None:
        rows = [_schedule_row(schedule) for schedule in self.schedules.values() if schedule.changed]
        if not rows:
            return
        if _is_postgres(self.session):
            self.session.execute(_UPDATE_SCHEDULES_FROM_JSON, {"rows": json_rows(rows)})
        else:
            self.session.execute(_UPDATE_SCHEDULE, rows)

    def _rejection(self, fire: FireRequest) -> FireResult | None:
        schedule = self.schedules.get(fire.schedule_id)
        if schedule is None:
            return FireResult(fire.fire_id, FireOutcome.NOT_FOUND, "")
        if schedule.revision != fire.revision:
            return FireResult(
                fire.fire_id,
                FireOutcome.STALE_REVISION,
                "",
                schedule.revision,
                schedule.next_run_at,
            )
        if not schedule.enabled:
            return FireResult(fire.fire_id, FireOutcome.DISABLED, "")
        return None

    def _insert(self, rows: list[dict[str, Any]]) -> list[str]:
        if not rows:
            return []
        if _is_postgres(self.session):
            return list(self.session.scalars(_INSERT_FIRES_FROM_JSON, {"rows": json_rows(rows)}))
        statement = sqlite.insert(FIRES).on_conflict_do_nothing().returning(FIRES.c.id)
        return list(self.session.scalars(statement, rows))

    def _row(self, fire: FireRequest) -> dict[str, Any]:
        schedule = self.schedules[fire.schedule_id]
        # A fire recorded ahead of its slot is released, and waits in the
        # outbox, until the slot.
        released = max(self.now, fire.scheduled_for)
        return {
            "id": fire.fire_id,
            "schedule_id": fire.schedule_id,
            "scheduled_for": fire.scheduled_for,
            "slot": fire.scheduled_for if fire.trigger in _SLOT_TRIGGERS else None,
            "fired_at": released,
            "trigger": fire.trigger.value,
            "status": "pending",
            "payload": fire_payload(schedule),
            "engine": schedule.engine,
            "connection": schedule.connection,
            "task_id": None,
            "attempts": 0,
            "last_error": None,
            "next_attempt_at": released,
            "dispatched_at": None,
            "epoch": self.epoch,
        }

    def _existing_statuses(self, fire_ids: list[str]) -> dict[str, str]:
        if not fire_ids:
            return {}
        statement = select(FIRES.c.id, FIRES.c.status).where(FIRES.c.id.in_(fire_ids))
        return {fire_id: status for fire_id, status in self.session.execute(statement)}

    def _advance_after_fire(self, fire: FireRequest) -> None:
        schedule = self.schedules[fire.schedule_id]
        schedule.total_runs += 1
        if schedule.last_run_at is None or fire.scheduled_for > schedule.last_run_at:
            schedule.last_run_at = fire.scheduled_for
        _move_cursor(schedule, fire.next_cursor)
        if schedule.kind == "one_shot" and fire.next_cursor is None:
            schedule.enabled = False
        schedule.changed = True


_UPDATE_SCHEDULE = (
    update(SCHEDULES)
    .where(SCHEDULES.c.id == bindparam("schedule_id"))
    .values(
        next_run_at=bindparam("next_run_at"),
        last_run_at=bindparam("last_run_at"),
        total_runs=bindparam("total_runs"),
        enabled=bindparam("enabled"),
    )
)


def _schedule_row(schedule: LockedSchedule) -> dict[str, Any]:
    return {
        "schedule_id": schedule.id,
        "next_run_at": schedule.next_run_at,
        "last_run_at": schedule.last_run_at,
        "total_runs": schedule.total_runs,
        "enabled": schedule.enabled,
    }


def _move_cursor(schedule: LockedSchedule, cursor: datetime | None) -> None:
    # Forward only, so a late frame cannot rewind a schedule past slots that
    # were already fired; None (no slot left) is final.
    if schedule.next_run_at is None:
        return
    if cursor is None or cursor > schedule.next_run_at:
        schedule.next_run_at = cursor
        schedule.changed = True


def _locked_epoch(session: Session) -> int:
    statement = select(LeaderState.epoch).where(LeaderState.id == 1).with_for_update()
    return session.scalar(statement) or 0


def _lock_schedules(session: Session, ids: set[int]) -> dict[int, LockedSchedule]:
    if not ids:
        return {}
    if _is_postgres(session):
        # One array literal: a statement text that does not grow with the
        # frame, which psycopg parses once and caches.
        literal = "{" + ",".join(str(schedule_id) for schedule_id in ids) + "}"
        matching = SCHEDULES.c.id == any_(
            sql_cast(bindparam("ids", literal, type_=String), postgresql.ARRAY(BigInteger))
        )
    else:
        matching = SCHEDULES.c.id.in_(ids)
    # Rows are locked in id order, so two transactions that lock overlapping
    # sets of schedules wait for each other instead of deadlocking.
    statement = select(*_LOCKED_COLUMNS).where(matching).order_by(SCHEDULES.c.id).with_for_update()
    return {row.id: _locked(row) for row in session.execute(statement)}


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# On PostgreSQL a frame's fires go in as one JSON document that the server
# expands with json_to_recordset. A multi-row VALUES insert of thousands of
# rows spends more time in psycopg parsing its statement text, which differs
# for every frame size, than in the server, and array parameters are dumped
# in Python one element at a time.
_INSERT_FIRES_FROM_JSON = text(
    """
    INSERT INTO schedule_fires (
        id, schedule_id, scheduled_for, slot, fired_at, trigger, status, payload,
        engine, connection, attempts, next_attempt_at, epoch
    )
    SELECT f.id, f.schedule_id, f.scheduled_for, f.slot, f.fired_at, f.trigger, 'pending',
           f.payload, f.engine, f.connection, 0, f.next_attempt_at, f.epoch
    FROM json_to_recordset(CAST(:rows AS json)) AS f(
        id text, schedule_id bigint, scheduled_for timestamptz, slot timestamptz,
        fired_at timestamptz, trigger text, payload json, engine text, connection text,
        next_attempt_at timestamptz, epoch bigint
    )
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)
_UPDATE_SCHEDULES_FROM_JSON = text(
    """
    UPDATE schedules AS s
    SET next_run_at = u.next_run_at, last_run_at = u.last_run_at,
        total_runs = u.total_runs, enabled = u.enabled
    FROM json_to_recordset(CAST(:rows AS json)) AS u(
        schedule_id bigint, next_run_at timestamptz, last_run_at timestamptz,
        total_runs bigint, enabled boolean
    )
    WHERE s.id = u.schedule_id
    """
)


def _locked(row: Any) -> LockedSchedule:
    return LockedSchedule(*row)
