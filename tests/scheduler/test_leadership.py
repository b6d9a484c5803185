"""The leader loop on PostgreSQL: a lost lock stops firing before the next frame, and a fenced
leader steps down and competes again."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import pytest
from sqlalchemy import Engine, text

from tests.scheduler.conftest import START, Harness
from z4j_brain_plugin.models import make_session_factory
from z4j_scheduler import store
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.leader import PostgresAdvisoryGate
from z4j_scheduler.wire.messages import CursorAdvance, FireBatchResult, FireRequest

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]


@dataclass
class LockKillingSender:
    """Sends through the real client, then ends the leader's lock session after the first frame."""

    client: BrainClient
    engine: Engine
    gate: PostgresAdvisoryGate
    frames: int = 0

    async def fire(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance] = ()
    ) -> FireBatchResult:
        result = await self.client.fire(epoch, fires, advances)
        self.frames += 1
        if self.frames == 1:
            with self.engine.connect() as connection:
                connection.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": self.gate.session_pid}
                )
        return result


async def test_lost_lock_stops_before_next_frame(harness: Harness, engine: Engine) -> None:
    ids = [harness.add(name=f"due-{index}", next_run_at=START) for index in range(3)]
    scheduler = harness.scheduler
    assert isinstance(scheduler.gate, PostgresAdvisoryGate)
    sender = LockKillingSender(harness.client, engine, scheduler.gate)
    scheduler.sender = sender
    scheduler.frame_size = 1
    assert await scheduler.acquire()

    outcome = await scheduler.tick_once()

    assert sender.frames == 1
    assert outcome.still_leader is False
    assert outcome.lost_reason == "leader lock lost"
    assert outcome.fired == 1
    assert sum(len(harness.fires(schedule_id)) for schedule_id in ids) == 1


async def test_fenced_leader_steps_down_and_competes_again(
    harness: Harness, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    first = harness.add(name="first", next_run_at=START)
    scheduler = harness.scheduler
    stop = anyio.Event()
    with caplog.at_level(logging.INFO, logger="z4j_scheduler.scheduler"):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, stop)
            with anyio.fail_after(30):
                while not harness.fires(first):
                    await anyio.sleep(0.02)
            fenced_epoch = scheduler.epoch
            assert fenced_epoch is not None
            with make_session_factory(engine, write=True).begin() as session:
                usurper = store.claim_epoch(session, "usurper", START)
            second = harness.add(name="second", next_run_at=START)
            with anyio.fail_after(30):
                while not harness.fires(second):
                    await anyio.sleep(0.02)
            stop.set()
    messages = [record.getMessage() for record in caplog.records]
    assert (
        f"leader lost: instance test-leader epoch {fenced_epoch} (epoch superseded by {usurper})"
        in messages
    )
    assert f"leader gained: instance test-leader epoch {usurper + 1}" in messages
    assert harness.fires(second)[0].epoch == usurper + 1


async def test_lost_lock_session_is_reacquired(harness: Harness, engine: Engine) -> None:
    scheduler = harness.scheduler
    assert isinstance(scheduler.gate, PostgresAdvisoryGate)
    assert await scheduler.acquire()
    first_epoch, lock_pid = scheduler.epoch, scheduler.gate.session_pid
    assert first_epoch is not None
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lock_pid})
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run, stop)
        with anyio.fail_after(30):
            while scheduler.gate.session_pid in (None, lock_pid) or scheduler.epoch is None:
                await anyio.sleep(0.02)
        second_epoch = scheduler.epoch
        stop.set()
    assert second_epoch > first_epoch
    assert scheduler.epoch is None
    assert scheduler.gate.session_pid is None
