"""Record fires from the scheduler in one transaction per frame.

The checks follow the fire protocol: a frame from a deposed leader (older
fencing epoch) writes nothing; a fire planned against an older schedule
revision is rejected with the live row so the leader can re-plan; a slot that
already has a fire row is a no-op that returns the first result; the cursor
moves forward only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from z4j_brain_plugin.models import Fire, LeaderState, Schedule
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


def utc_now() -> datetime:
    return datetime.now(UTC)


def fire_payload(schedule: Schedule) -> dict[str, Any]:
    """Return what the dispatcher needs, copied so later edits do not change a recorded fire."""
    return {
        "engine": schedule.engine,
        "connection": schedule.connection,
        "task_name": schedule.task_name,
        "args": list(schedule.args),
        "kwargs": dict(schedule.kwargs),
        "queue": schedule.queue,
    }


class FireRecorder:
    """The brain's handler of fire frames; ``on_recorded`` receives the new fire ids."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        on_recorded: Callable[[list[str]], None],
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._on_recorded = on_recorded
        self._clock = clock

    async def __call__(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> FireBatchResult:
        result, inserted = await anyio.to_thread.run_sync(self.record, epoch, fires, advances)
        if inserted:
            self._on_recorded(inserted)
        return result

    def record(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> tuple[FireBatchResult, list[str]]:
        with self._sessions.begin() as session:
            current = _locked_epoch(session)
            if epoch < current:
                return FireBatchResult((), (), stale_epoch=True, current_epoch=current), []
            ids = {fire.schedule_id for fire in fires} | {move.schedule_id for move in advances}
            schedules = _lock_schedules(session, ids)
            batch = _FrameWriter(session, schedules, epoch, self._clock())
            fire_results = batch.write_fires(fires)
            advance_results = tuple(batch.advance(move) for move in advances)
            return (
                FireBatchResult(fire_results, advance_results, False, current),
                batch.inserted,
            )


class _FrameWriter:
    def __init__(
        self, session: Session, schedules: dict[int, Schedule], epoch: int, now: datetime
    ) -> None:
        self.session = session
        self.schedules = schedules
        self.epoch = epoch
        self.now = now
        self.inserted: list[str] = []

    def write_fires(self, fires: Sequence[FireRequest]) -> tuple[FireResult, ...]:
        accepted = [fire for fire in fires if self._rejection(fire) is None]
        inserted = set(self._insert(accepted))
        self.inserted.extend(fire.fire_id for fire in accepted if fire.fire_id in inserted)
        statuses = self._existing_statuses([f.fire_id for f in accepted if f.fire_id not in inserted])
        results = []
        for fire in fires:
            rejection = self._rejection(fire)
            if rejection is not None:
                results.append(rejection)
                continue
            if fire.fire_id in inserted:
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
            return AdvanceResult(
                move.schedule_id, False, schedule.revision, schedule.next_run_at
            )
        _move_cursor(schedule, move.next_cursor)
        return AdvanceResult(move.schedule_id, applied=True)

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

    def _insert(self, fires: list[FireRequest]) -> list[str]:
        if not fires:
            return []
        rows = [self._row(fire) for fire in fires]
        dialect = postgresql if self.session.bind.dialect.name == "postgresql" else sqlite  # type: ignore[union-attr]
        statement = dialect.insert(Fire).on_conflict_do_nothing().returning(Fire.id)
        return list(self.session.scalars(statement, rows))

    def _row(self, fire: FireRequest) -> dict[str, Any]:
        is_slot = fire.trigger in (Trigger.SCHEDULE, Trigger.CATCH_UP)
        return {
            "id": fire.fire_id,
            "schedule_id": fire.schedule_id,
            "scheduled_for": fire.scheduled_for,
            "slot": fire.scheduled_for if is_slot else None,
            "fired_at": self.now,
            "trigger": fire.trigger.value,
            "status": "pending",
            "payload": fire_payload(self.schedules[fire.schedule_id]),
            "attempts": 0,
            "next_attempt_at": self.now,
            "epoch": self.epoch,
        }

    def _existing_statuses(self, fire_ids: list[str]) -> dict[str, str]:
        if not fire_ids:
            return {}
        rows = self.session.execute(select(Fire.id, Fire.status).where(Fire.id.in_(fire_ids)))
        return {fire_id: status for fire_id, status in rows}

    def _advance_after_fire(self, fire: FireRequest) -> None:
        schedule = self.schedules[fire.schedule_id]
        schedule.total_runs += 1
        if schedule.last_run_at is None or fire.scheduled_for > schedule.last_run_at:
            schedule.last_run_at = fire.scheduled_for
        _move_cursor(schedule, fire.next_cursor)
        if schedule.kind == "one_shot" and fire.next_cursor is None:
            schedule.enabled = False


def _move_cursor(schedule: Schedule, cursor: datetime | None) -> None:
    # Forward only, so a late frame cannot rewind a schedule past slots that
    # were already fired; None (no slot left) is final.
    if schedule.next_run_at is None:
        return
    if cursor is None or cursor > schedule.next_run_at:
        schedule.next_run_at = cursor


def _locked_epoch(session: Session) -> int:
    statement = select(LeaderState.epoch).where(LeaderState.id == 1).with_for_update()
    return session.scalar(statement) or 0


def _lock_schedules(session: Session, ids: set[int]) -> dict[int, Schedule]:
    if not ids:
        return {}
    statement = select(Schedule).where(Schedule.id.in_(ids)).with_for_update()
    return {schedule.id: schedule for schedule in session.scalars(statement)}
