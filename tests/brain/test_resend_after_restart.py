"""Fires recorded before a brain stopped are dispatched when it starts again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
import redis

from tests.brain.conftest import BROKER_URL, brain_settings
from z4j_brain_plugin.fires import FireRecorder
from z4j_brain_plugin.lifespan import brain_lifespan, open_brain
from z4j_brain_plugin.models import Fire, Project, Schedule
from z4j_scheduler.wire.messages import FireRequest, Trigger, slot_fire_id

pytestmark = pytest.mark.anyio


def record_pending_fire(database_url: str, tmp_path: Path, queue: str) -> str:
    brain = open_brain(brain_settings(database_url, tmp_path))
    now = datetime.now(UTC)
    with brain.writes.begin() as session:
        project = Project(slug="resend", name="resend", created_at=now)
        session.add(project)
        session.flush()
        schedule = Schedule(
            project_id=project.id,
            name="s",
            engine="celery",
            kind="cron",
            expression="* * * * *",
            task_name="examples.celery_app.tasks.record_run",
            args=["resent"],
            kwargs={},
            queue=queue,
            next_run_at=now,
            created_at=now,
            updated_at=now,
            revision=1,
            total_runs=0,
        )
        session.add(schedule)
        session.flush()
        schedule_id = schedule.id
    # Recorded by the brain's own frame handler, with nothing running to dispatch it.
    recorder = FireRecorder(brain.writes, lambda fire_ids: None)
    request = FireRequest(
        slot_fire_id(schedule_id, now), schedule_id, now, Trigger.SCHEDULE, 1, None
    )
    _result, inserted = recorder.record(0, [request], [])
    assert inserted == [request.fire_id]
    brain.engine.dispose()
    return request.fire_id


async def test_pending_fire_is_dispatched_after_start(database_url: str, tmp_path: Path) -> None:
    queue = f"resend-{uuid.uuid4().hex[:8]}"
    fire_id = record_pending_fire(database_url, tmp_path, queue)
    settings = brain_settings(database_url, tmp_path)
    client = redis.Redis.from_url(BROKER_URL)
    try:
        async with brain_lifespan(settings) as brain:
            with anyio.fail_after(30):
                while True:
                    fire = await brain.read(lambda session: session.get(Fire, fire_id))
                    if fire is not None and fire.status == "dispatched":
                        break
                    await anyio.sleep(0.05)
        assert fire.task_id == fire_id
        assert client.llen(queue) == 1
    finally:
        client.delete(queue)
        client.close()
