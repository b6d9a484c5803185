"""The FireSchedule transaction on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from z4j_brain_plugin.dispatchers.base import DispatchRequest
from z4j_brain_plugin.fires import FireRecorder, PendingFire, pending_fire
from z4j_brain_plugin.models import Fire, LeaderState, Project, Schedule, make_session_factory
from z4j_scheduler.wire.messages import (
    CursorAdvance,
    FireOutcome,
    FireRequest,
    Trigger,
    slot_fire_id,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SLOT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def add_schedule(engine: Engine, **overrides: object) -> int:
    with make_session_factory(engine, write=True).begin() as session:
        project = Project(slug="p", name="p", created_at=NOW)
        session.add(project)
        session.flush()
        values: dict[str, object] = {
            "project_id": project.id,
            "name": "s",
            "engine": "celery",
            "kind": "cron",
            "expression": "* * * * *",
            "timezone": "UTC",
            "task_name": "t",
            "args": [1],
            "kwargs": {"a": 2},
            "queue": "q",
            "next_run_at": SLOT,
            "created_at": NOW,
            "updated_at": NOW,
            "revision": 1,
            "total_runs": 0,
        }
        values.update(overrides)
        schedule = Schedule(**values)
        session.add(schedule)
        session.flush()
        return schedule.id


def request(
    schedule_id: int, slot: datetime = SLOT, revision: int = 1, cursor: datetime | None = None
) -> FireRequest:
    return FireRequest(
        fire_id=slot_fire_id(schedule_id, slot),
        schedule_id=schedule_id,
        scheduled_for=slot,
        trigger=Trigger.SCHEDULE,
        revision=revision,
        next_cursor=cursor or slot + timedelta(minutes=1),
    )


def set_epoch(engine: Engine, epoch: int) -> None:
    with make_session_factory(engine, write=True).begin() as session:
        session.get(LeaderState, 1).epoch = epoch  # type: ignore[union-attr]


@pytest.fixture
def recorder(engine: Engine) -> tuple[FireRecorder, list[list[PendingFire]]]:
    recorded: list[list[PendingFire]] = []
    return FireRecorder(
        make_session_factory(engine, write=True), recorded.append, clock=lambda: NOW
    ), recorded


def load(engine: Engine, schedule_id: int) -> Schedule:
    with make_session_factory(engine)() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        return schedule


def fire_count(engine: Engine) -> int:
    with make_session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(Fire)) or 0)


def test_accepted_fire_records_row_and_advances_cursor(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)
    result, inserted = handler.record(0, [request(schedule_id)], [])
    assert result.fires[0].outcome is FireOutcome.ACCEPTED
    assert inserted == [slot_fire_id(schedule_id, SLOT)]
    schedule = load(engine, schedule_id)
    assert schedule.next_run_at == SLOT + timedelta(minutes=1)
    assert schedule.total_runs == 1
    assert schedule.last_run_at == SLOT
    with make_session_factory(engine)() as session:
        fire = session.get(Fire, inserted[0])
        assert fire is not None
        assert fire.status == "pending"
        assert fire.payload == {
            "engine": "celery",
            "connection": "default",
            "task_name": "t",
            "args": [1],
            "kwargs": {"a": 2},
            "queue": "q",
        }


def test_second_request_for_slot_is_duplicate(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)
    handler.record(0, [request(schedule_id)], [])
    catch_up = FireRequest(
        slot_fire_id(schedule_id, SLOT),
        schedule_id,
        SLOT,
        Trigger.CATCH_UP,
        1,
        SLOT + timedelta(minutes=1),
    )
    result, inserted = handler.record(0, [catch_up], [])
    assert result.fires[0].outcome is FireOutcome.DUPLICATE
    assert result.fires[0].status == "pending"
    assert inserted == []
    assert fire_count(engine) == 1
    assert load(engine, schedule_id).total_runs == 1


def test_stale_epoch_writes_nothing(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)
    set_epoch(engine, 5)
    result, _ = handler.record(4, [request(schedule_id)], [])
    assert result.stale_epoch
    assert result.current_epoch == 5
    assert fire_count(engine) == 0
    assert load(engine, schedule_id).next_run_at == SLOT


def test_stale_revision_returns_live_row(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine, revision=3)
    result, _ = handler.record(0, [request(schedule_id, revision=2)], [])
    assert result.fires[0].outcome is FireOutcome.STALE_REVISION
    assert result.fires[0].live_revision == 3
    assert result.fires[0].live_next_run_at == SLOT
    assert fire_count(engine) == 0


def test_disabled_schedule_does_not_fire(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine, enabled=False)
    result, _ = handler.record(0, [request(schedule_id)], [])
    assert result.fires[0].outcome is FireOutcome.DISABLED
    assert fire_count(engine) == 0


def test_deleted_schedule_is_not_found(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    result, _ = handler.record(0, [request(987654)], [])
    assert result.fires[0].outcome is FireOutcome.NOT_FOUND


def test_one_shot_without_next_cursor_is_disabled(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine, kind="one_shot", expression=SLOT.isoformat())
    fire = FireRequest(
        slot_fire_id(schedule_id, SLOT), schedule_id, SLOT, Trigger.SCHEDULE, 1, None
    )
    handler.record(0, [fire], [])
    schedule = load(engine, schedule_id)
    assert schedule.enabled is False
    assert schedule.next_run_at is None


def test_cursor_moves_forward_only(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)
    later = SLOT + timedelta(hours=1)
    result, _ = handler.record(0, [], [CursorAdvance(schedule_id, 1, later, 3)])
    assert result.advances[0].applied
    handler.record(0, [], [CursorAdvance(schedule_id, 1, SLOT + timedelta(minutes=5), 0)])
    assert load(engine, schedule_id).next_run_at == later


def test_advance_with_stale_revision_is_not_applied(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine, revision=2)
    result, _ = handler.record(0, [], [CursorAdvance(schedule_id, 1, SLOT + timedelta(hours=1), 0)])
    assert not result.advances[0].applied
    assert result.advances[0].live_revision == 2
    assert load(engine, schedule_id).next_run_at == SLOT


def test_batch_of_many_slots_is_one_transaction(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)
    slots = [SLOT + timedelta(minutes=index) for index in range(500)]
    final = slots[-1] + timedelta(minutes=1)
    fires = [request(schedule_id, slot, cursor=final) for slot in slots]
    result, inserted = handler.record(0, fires, [])
    assert [item.outcome for item in result.fires] == [FireOutcome.ACCEPTED] * 500
    assert len(inserted) == 500
    assert fire_count(engine) == 500
    assert load(engine, schedule_id).next_run_at == final


def test_new_fire_carries_request_from_payload(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)
    fire_id = slot_fire_id(schedule_id, SLOT)

    _, [fire] = handler.record_fires(0, [request(schedule_id)], [])

    assert fire.fire_id == fire_id
    assert (fire.engine, fire.connection) == ("celery", "default")
    assert fire.scheduled_for == SLOT
    assert fire.attempts == 0
    assert fire.request == DispatchRequest(fire_id, schedule_id, "t", (1,), {"a": 2}, "q")


def test_new_fire_equals_fire_read_from_row(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, _ = recorder
    schedule_id = add_schedule(engine)

    _, [fire] = handler.record_fires(0, [request(schedule_id)], [])

    with engine.connect() as db:
        row = db.execute(select(Fire.__table__).where(Fire.__table__.c.id == fire.fire_id))
        assert pending_fire(row.mappings().one()) == fire


@pytest.mark.anyio
async def test_handler_passes_only_new_fires_on(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, recorded = recorder
    schedule_id = add_schedule(engine)
    first = request(schedule_id)
    second = request(schedule_id, SLOT + timedelta(minutes=1), cursor=SLOT + timedelta(minutes=2))

    await handler(0, [first], [])
    result = await handler(0, [first, second], [])

    assert [fire.outcome for fire in result.fires] == [FireOutcome.DUPLICATE, FireOutcome.ACCEPTED]
    assert [[fire.fire_id for fire in batch] for batch in recorded] == [
        [first.fire_id],
        [second.fire_id],
    ]


@pytest.mark.anyio
async def test_handler_skips_callback_without_new_fires(
    engine: Engine, recorder: tuple[FireRecorder, list[list[PendingFire]]]
) -> None:
    handler, recorded = recorder
    schedule_id = add_schedule(engine)

    result = await handler(0, [], [CursorAdvance(schedule_id, 1, SLOT + timedelta(hours=1), 0)])

    assert result.advances[0].applied
    assert recorded == []
