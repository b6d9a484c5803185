"""Reconcile: which cursor is correct, and corrections sent through a real brain endpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.scheduler.conftest import START, Harness
from z4j_brain_plugin.models import Schedule, make_session_factory
from z4j_scheduler import metrics
from z4j_scheduler.planner import Planner
from z4j_scheduler.reconcile import Reconciler, correct_cursor
from z4j_scheduler.semantics import parse_schedule
from z4j_scheduler.wire.messages import CursorAdvance, FireBatchResult, FireRequest

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


EVERY_FIVE = parse_schedule("cron", "*/5 * * * *", "UTC", None)


@pytest.mark.parametrize(
    ("cursor", "last_fired", "now", "expected"),
    [
        # A slot with no unfired slot before it from now on: left alone.
        (at(12, 5), at(12, 0), at(12, 2), at(12, 5)),
        # Due and not a slot: forward to the next slot.
        (at(12, 3), at(11, 55), at(12, 10), at(12, 5)),
        # In the future and not a slot, with a slot between now and it: back to that slot.
        (at(12, 3), at(11, 55), at(12, 0), at(12, 0)),
        # A slot far ahead, skipping unfired future slots: back to the first of them.
        (at(13, 0), at(12, 0), at(12, 2), at(12, 5)),
        # At or before the latest fired slot: forward past it, so it never fires twice.
        (at(12, 0), at(12, 0), at(12, 1), at(12, 5)),
        (at(11, 50), at(12, 0), at(12, 3), at(12, 5)),
    ],
)
def test_correct_cursor_every_five_minutes(
    cursor: datetime, last_fired: datetime | None, now: datetime, expected: datetime
) -> None:
    assert correct_cursor(EVERY_FIVE, cursor, last_fired, now) == expected


def test_correct_cursor_one_shot_passed_is_none() -> None:
    one_shot = parse_schedule("one_shot", "2026-03-02T12:00:00Z", "UTC", None)
    assert correct_cursor(one_shot, at(12, 30), None, at(13, 0)) is None
    assert correct_cursor(one_shot, at(12, 0), None, at(11, 0)) == at(12, 0)


def test_correct_cursor_follows_a_zone_change() -> None:
    # 09:00 in New York is 14:00 UTC on 2 March 2026 (EST, UTC-5). A cursor
    # left at 09:00 UTC by the old zone moves forward to it.
    new_york = parse_schedule("cron", "0 9 * * *", "America/New_York", None)
    assert correct_cursor(new_york, at(9), at(9, day=1), at(8)) == at(14)
    # The other way round the old cursor would skip 09:00 UTC: a backward correction.
    london = parse_schedule("cron", "0 9 * * *", "Europe/London", None)
    assert correct_cursor(london, at(14), at(9, day=1), at(8)) == at(9)


async def run_pass(harness: Harness, max_batches: int = 100) -> int:
    """Run reconcile batches until the pass ends; return how many ran."""
    batches = 0
    while harness.scheduler.reconciler.due():
        assert batches < max_batches, "the reconcile pass does not end"
        assert await harness.scheduler.reconcile_step() is None
        batches += 1
    return batches


def add_cases(harness: Harness) -> dict[str, int]:
    """Schedules at START (12:00 on 1 March 2026) with cursors a tool left behind."""
    every_five = {"kind": "cron", "expression": "*/5 * * * *"}
    return {
        "consistent": harness.add(
            name="consistent", **every_five, next_run_at=START + timedelta(minutes=5)
        ),
        "off_slot": harness.add(
            name="off-slot", **every_five, next_run_at=START + timedelta(minutes=3, seconds=20)
        ),
        "skips_ahead": harness.add(
            name="skips-ahead", **every_five, next_run_at=START + timedelta(hours=2)
        ),
        "invalid": harness.add(
            name="invalid",
            kind="cron",
            expression="not a cron",
            next_run_at=START + timedelta(minutes=7),
        ),
        "interval": harness.add(
            name="interval",
            kind="interval",
            expression="60",
            start_at=START,
            next_run_at=START + timedelta(seconds=30),
        ),
    }


@pytest.mark.anyio
async def test_pass_corrects_forward_and_reports_backward(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ids = add_cases(harness)
    harness.clock.advance(seconds=10)
    passes_before = metrics.REGISTRY.get_sample_value("z4j_scheduler_reconcile_passes_total") or 0.0
    harness.scheduler.reconciler.batch_size = 2
    assert await harness.scheduler.acquire()
    with caplog.at_level(logging.INFO, logger="z4j_scheduler.reconcile"):
        batches = await run_pass(harness)

    assert batches == 3
    assert harness.schedule(ids["consistent"]).next_run_at == START + timedelta(minutes=5)
    assert harness.schedule(ids["off_slot"]).next_run_at == START + timedelta(minutes=5)
    assert harness.schedule(ids["interval"]).next_run_at == START + timedelta(minutes=1)
    assert harness.schedule(ids["skips_ahead"]).next_run_at == START + timedelta(hours=2)
    assert harness.schedule(ids["invalid"]).next_run_at == START + timedelta(minutes=7)
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        f"schedule {ids['off_slot']} cursor 2026-03-01T12:03:20+00:00 corrected to "
        f"2026-03-01T12:05:00+00:00" in message
        for message in messages
    )
    assert any(
        f"schedule {ids['skips_ahead']} cursor 2026-03-01T14:00:00+00:00 skips the unfired slot "
        f"2026-03-01T12:05:00+00:00" in message
        for message in messages
    )
    assert any(
        f"[{ids['invalid']}]" in message and "cannot be parsed" in message for message in messages
    )
    assert any("reconcile pass done: 2 cursors corrected" in message for message in messages)
    passes_after = metrics.REGISTRY.get_sample_value("z4j_scheduler_reconcile_passes_total") or 0.0
    assert passes_after == passes_before + 1
    assert harness.fires(ids["off_slot"]) == []


@pytest.mark.anyio
async def test_edit_during_pass_wins(
    harness: Harness, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    schedule_id = harness.add(
        kind="cron", expression="*/5 * * * *", next_run_at=START + timedelta(minutes=3)
    )
    harness.clock.advance(seconds=30)

    class EditingSender:
        """Edits the schedule just before the corrections reach the brain."""

        async def fire(
            self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance] = ()
        ) -> FireBatchResult:
            if advances:
                with make_session_factory(engine, write=True).begin() as session:
                    row = session.get(Schedule, schedule_id)
                    assert row is not None
                    row.revision += 1
                    row.next_run_at = START + timedelta(minutes=30)
            return await harness.client.fire(epoch, fires, advances)

    harness.scheduler.sender = EditingSender()
    assert await harness.scheduler.acquire()
    with caplog.at_level(logging.INFO, logger="z4j_scheduler.reconcile"):
        await run_pass(harness)
    assert harness.schedule(schedule_id).next_run_at == START + timedelta(minutes=30)
    assert any(
        f"schedule {schedule_id} changed or was deleted since it was read" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.anyio
async def test_run_loop_reconciles_on_leadership(harness: Harness) -> None:
    schedule_id = harness.add(
        kind="cron", expression="*/5 * * * *", next_run_at=START + timedelta(minutes=1)
    )
    harness.clock.advance(seconds=30)
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        await group.start(harness.scheduler.run, stop)
        with anyio.fail_after(30):
            while harness.schedule(schedule_id).next_run_at != START + timedelta(minutes=5):
                await anyio.sleep(0.02)
        stop.set()
    assert not harness.scheduler.reconciler.due()


def test_reconciler_rejects_bad_settings() -> None:
    sessions: sessionmaker[Session] = sessionmaker()
    with pytest.raises(ValueError, match="invalid reconcile interval -1"):
        Reconciler(sessions, Planner(timedelta(0)), interval=-1)
    with pytest.raises(ValueError, match="invalid reconcile batch size 0"):
        Reconciler(sessions, Planner(timedelta(0)), batch_size=0)
    assert not Reconciler(sessions, Planner(timedelta(0)), interval=0).enabled
