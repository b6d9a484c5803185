"""One scheduler tick against a real brain endpoint and database."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine

from z4j_brain_plugin.models import Schedule, make_session_factory
from z4j_scheduler import store
from z4j_scheduler.serve import EXIT_NOT_LEADER as NOT_LEADER_STATUS
from z4j_scheduler.wire.messages import slot_fire_id

from tests.scheduler.conftest import START, Harness

pytestmark = pytest.mark.anyio


async def test_due_slot_fires_once_and_cursor_moves(harness: Harness) -> None:
    schedule_id = harness.add(next_run_at=START)
    assert await harness.scheduler.acquire()
    outcome = await harness.scheduler.tick_once()
    assert outcome.fired == 1
    fires = harness.fires(schedule_id)
    assert [fire.scheduled_for for fire in fires] == [START]
    assert fires[0].id == slot_fire_id(schedule_id, START)
    assert fires[0].trigger == "schedule"
    assert fires[0].epoch == harness.scheduler.epoch
    assert harness.schedule(schedule_id).next_run_at == START + timedelta(minutes=1)
    again = await harness.scheduler.tick_once()
    assert again.fired == 0
    assert len(harness.fires(schedule_id)) == 1


async def test_future_cursor_does_not_fire(harness: Harness) -> None:
    schedule_id = harness.add(next_run_at=START + timedelta(minutes=1))
    assert await harness.scheduler.acquire()
    outcome = await harness.scheduler.tick_once()
    assert outcome.fired == 0
    assert outcome.next_due == START + timedelta(minutes=1)
    assert harness.fires(schedule_id) == []


async def test_outage_fire_all_missed_marks_catch_up(harness: Harness) -> None:
    schedule_id = harness.add(next_run_at=START - timedelta(hours=1), catch_up="fire_all_missed")
    assert await harness.scheduler.acquire()
    await harness.scheduler.tick_once()
    fires = harness.fires(schedule_id)
    # 60 slots from 11:00 to 12:00 inclusive of 12:00; those within the
    # 60 s grace (11:59 and 12:00) are on time.
    assert len(fires) == 61
    assert [fire.trigger for fire in fires].count("catch_up") == 59
    assert [fire.trigger for fire in fires[-2:]] == ["schedule", "schedule"]
    assert harness.schedule(schedule_id).next_run_at == START + timedelta(minutes=1)


async def test_outage_skip_advances_without_firing(harness: Harness) -> None:
    schedule_id = harness.add(next_run_at=START - timedelta(hours=1), catch_up="skip")
    harness.clock.advance(seconds=30)
    assert await harness.scheduler.acquire()
    outcome = await harness.scheduler.tick_once()
    fires = harness.fires(schedule_id)
    # Only 12:00 (30 s late, within grace) fires; the missed hour is skipped.
    assert [fire.scheduled_for for fire in fires] == [START]
    assert outcome.fired == 1
    assert harness.schedule(schedule_id).next_run_at == START + timedelta(minutes=1)


async def test_newer_leader_fences_old_epoch(harness: Harness, engine: Engine) -> None:
    schedule_id = harness.add(next_run_at=START)
    assert await harness.scheduler.acquire()
    with make_session_factory(engine, write=True).begin() as session:
        store.claim_epoch(session, "usurper", START)
    outcome = await harness.scheduler.tick_once()
    assert outcome.still_leader is False
    assert harness.fires(schedule_id) == []
    assert harness.schedule(schedule_id).next_run_at == START


async def test_edit_between_read_and_fire_is_not_fired(harness: Harness, engine: Engine) -> None:
    schedule_id = harness.add(next_run_at=START, revision=1)
    assert await harness.scheduler.acquire()
    rows, _ = await anyio.to_thread.run_sync(harness.scheduler._read_window, START)
    with make_session_factory(engine, write=True).begin() as session:
        row = session.get(Schedule, schedule_id)
        assert row is not None
        row.revision = 2
    plan = harness.scheduler.planner.plan(rows, START)
    result = await harness.client.fire(harness.scheduler.epoch or 0, plan.fires, plan.advances)
    assert [item.outcome.value for item in result.fires] == ["stale_revision"]
    assert result.fires[0].live_revision == 2
    assert harness.fires(schedule_id) == []


async def test_run_stops_on_event_and_releases_gate(harness: Harness) -> None:
    harness.add(next_run_at=START + timedelta(days=1))
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        await group.start(harness.scheduler.run, stop)
        with anyio.fail_after(30):
            while not harness.scheduler.leading:
                await anyio.sleep(0.01)
        stop.set()
    assert not harness.scheduler.leading


def test_second_scheduler_on_sqlite_exits(tmp_path: Path) -> None:
    database = tmp_path / "z4j.db"
    lock_path = tmp_path / "z4j.db.scheduler.lock"
    env = {
        **os.environ,
        "Z4J_DATABASE_URL": f"sqlite:///{database}",
        "Z4J_TLS_CERT": str(tmp_path / "c"),
        "Z4J_TLS_KEY": str(tmp_path / "k"),
        "Z4J_TLS_CA": str(tmp_path / "a"),
        "Z4J_SECRET": "s",
    }
    with lock_path.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = subprocess.run(
            [sys.executable, "-m", "z4j_scheduler", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == NOT_LEADER_STATUS
    assert "only one instance may run on a SQLite database" in result.stderr


def test_serve_on_sqlite_needs_no_psycopg(tmp_path: Path) -> None:
    # psycopg comes with the postgres extra only; a SQLite install has none.
    database = tmp_path / "z4j.db"
    env = {
        **os.environ,
        "Z4J_DATABASE_URL": f"sqlite:///{database}",
        "Z4J_TLS_CERT": str(tmp_path / "c"),
        "Z4J_TLS_KEY": str(tmp_path / "k"),
        "Z4J_TLS_CA": str(tmp_path / "a"),
        "Z4J_SECRET": "s",
    }
    without_psycopg = (
        "import sys; sys.modules['psycopg'] = None; "
        "from z4j_scheduler.cli import main; sys.exit(main(['serve']))"
    )
    with (tmp_path / "z4j.db.scheduler.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = subprocess.run(
            [sys.executable, "-c", without_psycopg],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "psycopg" not in result.stderr
    assert result.returncode == NOT_LEADER_STATUS
