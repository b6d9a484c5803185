"""Slots within the look-ahead are planned at one read and sent from memory at their instants."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from sqlalchemy import Engine

from tests.scheduler.conftest import START, Harness
from z4j_brain_plugin.models import Schedule, make_session_factory
from z4j_scheduler.wire.messages import slot_fire_id

pytestmark = pytest.mark.anyio

# A six-field cron firing every second: its slot one second ahead is within
# the default look-ahead of one second.
EVERY_SECOND = "* * * * * *"
SOON = START + timedelta(seconds=1)


async def test_slot_ahead_sent_at_instant(harness: Harness) -> None:
    slot = SOON
    schedule_id = harness.add(next_run_at=slot, expression=EVERY_SECOND)
    assert await harness.scheduler.acquire()
    outcome = await harness.scheduler.tick_once()
    assert (outcome.fired, outcome.upcoming, outcome.next_due) == (0, 1, slot)
    assert harness.fires(schedule_id) == []
    harness.clock.advance(seconds=1)
    assert await harness.scheduler.fire_upcoming(anyio.Event()) is None
    fires = harness.fires(schedule_id)
    assert [(fire.id, fire.scheduled_for, fire.trigger) for fire in fires] == [
        (slot_fire_id(schedule_id, slot), slot, "schedule")
    ]
    assert harness.schedule(schedule_id).next_run_at == START + timedelta(seconds=2)


async def test_slot_beyond_lookahead_waits(harness: Harness) -> None:
    schedule_id = harness.add(next_run_at=START + timedelta(seconds=5))
    assert await harness.scheduler.acquire()
    outcome = await harness.scheduler.tick_once()
    assert (outcome.upcoming, outcome.next_due) == (0, START + timedelta(seconds=5))
    assert harness.fires(schedule_id) == []


async def test_edit_after_planning_refires_new_revision(harness: Harness, engine: Engine) -> None:
    slot = SOON
    schedule_id = harness.add(next_run_at=slot, revision=1, expression=EVERY_SECOND)
    assert await harness.scheduler.acquire()
    assert (await harness.scheduler.tick_once()).upcoming == 1
    with make_session_factory(engine, write=True).begin() as session:
        row = session.get(Schedule, schedule_id)
        assert row is not None
        row.revision = 2
    harness.clock.advance(seconds=1)
    await harness.scheduler.fire_upcoming(anyio.Event())
    assert harness.fires(schedule_id) == []
    again = await harness.scheduler.tick_once()
    assert again.fired == 1
    assert [fire.scheduled_for for fire in harness.fires(schedule_id)] == [slot]


async def test_stop_drops_plan_unsent(harness: Harness) -> None:
    schedule_id = harness.add(next_run_at=SOON, expression=EVERY_SECOND)
    assert await harness.scheduler.acquire()
    assert (await harness.scheduler.tick_once()).upcoming == 1
    stop = anyio.Event()
    stop.set()
    assert await harness.scheduler.fire_upcoming(stop) is None
    harness.clock.advance(seconds=1)
    assert await harness.scheduler.fire_upcoming(anyio.Event()) is None
    assert harness.fires(schedule_id) == []
    assert harness.schedule(schedule_id).next_run_at == SOON


async def test_pages_stop_at_ahead_limit(harness: Harness) -> None:
    scheduler = harness.scheduler
    scheduler.batch_size, scheduler.ahead_limit = 10, 15
    slot = SOON
    ids = [
        harness.add(next_run_at=slot, name=f"many-{index}", expression=EVERY_SECOND)
        for index in range(25)
    ]
    assert await scheduler.acquire()
    first = await scheduler.tick_once()
    # Two pages of ten reach the limit of fifteen; the rest waits for the next read.
    assert (first.fired, first.upcoming, first.backlog) == (0, 20, False)
    harness.clock.advance(seconds=1)
    assert await scheduler.fire_upcoming(anyio.Event()) is None
    second = await scheduler.tick_once()
    assert second.fired == 5
    for schedule_id in ids:
        assert [fire.scheduled_for for fire in harness.fires(schedule_id)] == [slot]


async def test_full_due_page_is_backlog(harness: Harness) -> None:
    scheduler = harness.scheduler
    scheduler.batch_size = 4
    for index in range(6):
        harness.add(next_run_at=START, name=f"due-{index}")
    harness.add(next_run_at=SOON, name="soon", expression=EVERY_SECOND)
    assert await scheduler.acquire()
    first = await scheduler.tick_once()
    assert (first.fired, first.upcoming, first.backlog) == (4, 0, True)
    second = await scheduler.tick_once()
    assert (second.fired, second.upcoming, second.backlog) == (2, 1, False)


async def test_cursor_between_slots_moves_at_instant(harness: Harness) -> None:
    # Every minute, so a cursor half a second after START is no slot: the plan
    # for its instant only moves the cursor to the next slot.
    schedule_id = harness.add(next_run_at=START + timedelta(milliseconds=500))
    assert await harness.scheduler.acquire()
    outcome = await harness.scheduler.tick_once()
    assert outcome.upcoming == 0
    assert outcome.next_due == START + timedelta(milliseconds=500)
    harness.clock.advance(milliseconds=500)
    assert await harness.scheduler.fire_upcoming(anyio.Event()) is None
    assert harness.fires(schedule_id) == []
    assert harness.schedule(schedule_id).next_run_at == START + timedelta(minutes=1)


async def test_storm_sent_earlier_than_single_slot(harness: Harness) -> None:
    scheduler = harness.scheduler
    scheduler.send_ahead, scheduler.frame_size = timedelta(milliseconds=100), 2
    ids = [
        harness.add(next_run_at=SOON, name=f"storm-{i}", expression=EVERY_SECOND) for i in range(5)
    ]
    assert await scheduler.acquire()
    assert (await scheduler.tick_once()).upcoming == 5
    # Five fires need three frames: half the send-ahead plus one more per extra frame.
    assert scheduler._send_lead(scheduler._upcoming[0]) == timedelta(milliseconds=250)
    harness.clock.advance(milliseconds=750)
    assert await scheduler.fire_upcoming(anyio.Event()) is None
    for schedule_id in ids:
        assert [fire.scheduled_for for fire in harness.fires(schedule_id)] == [SOON]


async def test_single_slot_lead_is_half_send_ahead(harness: Harness) -> None:
    scheduler = harness.scheduler
    scheduler.send_ahead = timedelta(milliseconds=100)
    harness.add(next_run_at=SOON, expression=EVERY_SECOND)
    assert await scheduler.acquire()
    await scheduler.tick_once()
    assert scheduler._send_lead(scheduler._upcoming[0]) == timedelta(milliseconds=50)
