"""Schedule change notifications on PostgreSQL wake a leader that sleeps until its next slot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import psycopg
import pytest
from sqlalchemy import Engine, text

from tests.scheduler.conftest import Harness
from z4j_brain_plugin.models import SCHEDULE_CHANGES_CHANNEL, make_engine
from z4j_scheduler.changes import ChangeListener
from z4j_scheduler.scheduler import SystemClock

pytestmark = pytest.mark.anyio
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

DEADLINE = 20.0


@pytest.fixture
def listen_connection(engine: Engine) -> Iterator[psycopg.Connection]:
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'LISTEN "{SCHEDULE_CHANGES_CHANNEL}"')
        yield connection


def received(connection: psycopg.Connection) -> int:
    """Return how many notifications arrive before one second passes without another."""
    return sum(1 for _ in connection.notifies(timeout=1.0))


@postgres_only
def test_edits_notify_cursor_moves_not(
    harness: Harness, engine: Engine, listen_connection: psycopg.Connection
) -> None:
    first = harness.add(next_run_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC), name="first")
    assert received(listen_connection) == 1
    with engine.begin() as connection:
        # What the brain writes for a fire: the cursor moves, the revision stays.
        connection.execute(
            text("UPDATE schedules SET next_run_at = next_run_at + interval '1 minute'")
        )
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE schedules SET revision = revision + 1 WHERE id = :id"), {"id": first}
        )
    # Notifications arrive in commit order, so the edit's notification is
    # the only one: the cursor move sent none.
    assert received(listen_connection) == 1
    with engine.begin() as connection:
        for index in range(50):
            harness.add(next_run_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC), name=f"bulk-{index}")
        connection.execute(text("DELETE FROM schedules WHERE id = :id"), {"id": first})
    assert received(listen_connection) == 51


@postgres_only
async def test_change_wakes_sleeping_leader(harness: Harness, engine: Engine) -> None:
    scheduler = harness.scheduler
    scheduler.clock = SystemClock()
    # Without a notification the leader would not read again for a minute.
    scheduler.poll_interval = scheduler.listen_poll_interval = 60.0
    listener = ChangeListener(engine, scheduler.notify_change)
    scheduler.listening = lambda: listener.listening
    stop = anyio.Event()
    async with anyio.create_task_group() as listening:
        listening.start_soon(listener.run)
        async with anyio.create_task_group() as group:
            await group.start(scheduler.run, stop)
            with anyio.fail_after(DEADLINE):
                while not (scheduler.leading and listener.listening and scheduler.reads):
                    await anyio.sleep(0.01)
            reads = scheduler.reads
            slot = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
            schedule_id = harness.add(next_run_at=slot, expression="* * * * * *", name="new")
            with anyio.fail_after(DEADLINE):
                while not harness.fires(schedule_id):
                    await anyio.sleep(0.02)
            stop.set()
        listening.cancel_scope.cancel()
    assert scheduler.reads > reads
    assert listener.notifications >= 1
    assert harness.fires(schedule_id)[0].scheduled_for == slot


@postgres_only
async def test_listener_reconnects_after_kill(engine: Engine) -> None:
    changes: list[int] = []
    name = f"z4j-scheduler changes {uuid.uuid4().hex[:8]}"
    listener = ChangeListener(engine, lambda: changes.append(1), application_name=name)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.run)
        with anyio.fail_after(DEADLINE):
            while not listener.listening:
                await anyio.sleep(0.01)
        connected = len(changes)
        with engine.begin() as connection:
            killed = connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": name},
            )
        assert killed == 1
        # A reconnection counts as a change: notifications may have been missed.
        with anyio.fail_after(DEADLINE):
            while len(changes) <= connected or not listener.listening:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert not listener.listening


def test_listener_refuses_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'z4j.db'}")
    with pytest.raises(
        ValueError, match="invalid database sqlite: change notifications need PostgreSQL"
    ):
        ChangeListener(engine, lambda: None)
