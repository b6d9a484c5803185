"""Outbox lanes: a down or silent broker holds up only its own connection's fires.

The healthy connection is the real Redis server; the down one is a closed
loopback port, later served by a Redis server this test starts itself.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from sqlalchemy import Engine, insert, select

from tests.dispatchers.support import closed_port
from z4j_brain_plugin.dispatchers.base import Dispatcher
from z4j_brain_plugin.dispatchers.celery import CeleryDispatcher
from z4j_brain_plugin.migrate import upgrade
from z4j_brain_plugin.models import Fire, Project, Schedule, make_engine, make_session_factory
from z4j_brain_plugin.outbox import Outbox, RetryPolicy

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

HEALTHY_URL = "redis://127.0.0.1:6379/14"
DEADLINE = 30.0
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def add_schedule(engine: Engine, connection: str) -> int:
    with make_session_factory(engine, write=True).begin() as session:
        project = session.scalar(select(Project).where(Project.slug == "lanes"))
        if project is None:
            project = Project(slug="lanes", name="lanes", created_at=NOW)
            session.add(project)
            session.flush()
        schedule = Schedule(
            project_id=project.id,
            name=f"on-{connection}",
            engine="celery",
            connection=connection,
            kind="cron",
            expression="0 0 1 1 *",
            timezone="UTC",
            task_name="lanes.task",
            args=[],
            kwargs={},
            queue=None,
            catch_up="skip",
            enabled=True,
            source="api",
            revision=1,
            total_runs=0,
            next_run_at=NOW,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(schedule)
        session.flush()
        return schedule.id


def add_fire(engine: Engine, schedule_id: int, connection: str, queue: str) -> str:
    """Insert a pending fire as the fire recorder would, due at once."""
    fire_id = str(uuid.uuid4())
    payload = {
        "engine": "celery",
        "connection": connection,
        "task_name": "lanes.task",
        "args": [fire_id],
        "kwargs": {},
        "queue": queue,
    }
    now = datetime.now(UTC)
    row = {
        "id": fire_id,
        "schedule_id": schedule_id,
        "scheduled_for": now,
        "slot": None,
        "fired_at": now,
        "trigger": "manual",
        "status": "pending",
        "payload": payload,
        "engine": "celery",
        "connection": connection,
        "attempts": 0,
        "next_attempt_at": now,
        "epoch": 0,
    }
    with engine.begin() as db:
        db.execute(insert(Fire.__table__), [row])
    return fire_id


def fire_row(engine: Engine, fire_id: str) -> Any:
    with engine.connect() as db:
        return db.execute(select(Fire.__table__).where(Fire.__table__.c.id == fire_id)).one()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}")
        await anyio.sleep(0.05)


def status_is(engine: Engine, fire_id: str, status: str) -> Callable[[], bool]:
    return lambda: fire_row(engine, fire_id).status == status


@asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[Outbox]:
    async with anyio.create_task_group() as group:
        await group.start(outbox.run)
        try:
            yield outbox
        finally:
            group.cancel_scope.cancel()


@contextmanager
def redis_server(port: int) -> Iterator[None]:
    """Run a throwaway Redis server on ``port`` of 127.0.0.1, stopped by its PID."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        yield
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE)


def queue_length(url: str, queue: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen(queue))
    finally:
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()


class PausedBroker:
    """A loopback port in front of the real Redis that leaves every request unanswered until ``release()``.

    Until then a client connects and its requests go unanswered, as with a
    broker that hangs. After ``release()`` the held bytes go to Redis and the
    connection works normally.
    """

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._released = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        held = b""
        client.settimeout(0.05)
        while not self._released.is_set():
            try:
                held += client.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
        client.settimeout(None)
        upstream = socket.create_connection(self._target, timeout=DEADLINE)
        upstream.settimeout(None)
        self._sockets.append(upstream)
        upstream.sendall(held)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        target.close()


@pytest.fixture
def queue() -> str:
    return f"z4j_test_lanes_{uuid.uuid4().hex[:10]}"


def make_outbox(engine: Engine, dispatchers: dict[tuple[str, str], Dispatcher]) -> Outbox:
    return Outbox(
        make_session_factory(engine, write=True), dispatchers, RetryPolicy(initial=0.2, maximum=1.0)
    )


async def test_down_broker_fails_its_lane_then_recovers(engine: Engine, queue: str) -> None:
    port = closed_port()
    down_url = f"redis://127.0.0.1:{port}/0"
    healthy = CeleryDispatcher(HEALTHY_URL)
    down = CeleryDispatcher(down_url, timeout=2.0)
    outbox = make_outbox(engine, {("celery", "default"): healthy, ("celery", "down"): down})
    stuck = add_fire(engine, add_schedule(engine, "down"), "down", queue)
    sent = add_fire(engine, add_schedule(engine, "default"), "default", queue)
    try:
        async with running(outbox):
            await wait_for(status_is(engine, sent, "dispatched"), "the healthy lane's fire")
            await wait_for(status_is(engine, stuck, "failed"), "the down lane's fire to fail")
            failed = fire_row(engine, stuck)
            assert "Connection refused" in failed.last_error
            assert failed.next_attempt_at is not None
            assert failed.attempts >= 1
            with redis_server(port):
                await wait_for(
                    status_is(engine, stuck, "dispatched"), "the fire after the broker came back"
                )
                assert queue_length(down_url, queue) == 1
    finally:
        healthy.close()
        down.close()
    assert queue_length(HEALTHY_URL, queue) == 1
    assert fire_row(engine, sent).task_id == sent


async def test_hanging_broker_does_not_delay_other_lane(engine: Engine, queue: str) -> None:
    paused = PausedBroker(6379)
    paused_url = f"redis://127.0.0.1:{paused.port}/14"
    healthy = CeleryDispatcher(HEALTHY_URL)
    # Far longer than the test runs, so the hanging lane stays blocked until released.
    hanging = CeleryDispatcher(paused_url, timeout=120.0)
    outbox = make_outbox(engine, {("celery", "default"): healthy, ("celery", "hanging"): hanging})
    held = add_fire(engine, add_schedule(engine, "hanging"), "hanging", queue)
    healthy_schedule = add_schedule(engine, "default")
    first = add_fire(engine, healthy_schedule, "default", queue)
    try:
        async with running(outbox):
            await wait_for(status_is(engine, first, "dispatched"), "the first healthy fire")
            second = add_fire(engine, healthy_schedule, "default", queue)
            outbox.wake()
            await wait_for(status_is(engine, second, "dispatched"), "the second healthy fire")
            assert fire_row(engine, held).status == "pending"
            paused.release()
            await wait_for(
                status_is(engine, held, "dispatched"), "the held fire after the broker answered"
            )
    finally:
        paused.close()
        healthy.close()
        hanging.close()
    assert queue_length(HEALTHY_URL, queue) == 3


async def test_unconfigured_connection_fails_with_retry(engine: Engine, queue: str) -> None:
    outbox = make_outbox(engine, {})
    orphan = add_fire(engine, add_schedule(engine, "removed"), "removed", queue)

    attempted = await outbox.dispatch_due()

    row = fire_row(engine, orphan)
    assert attempted == 1
    assert row.status == "failed"
    assert "no broker is configured for connection 'removed'" in row.last_error
    assert row.next_attempt_at is not None


async def test_lane_claims_backlog_beyond_one_pass(
    engine: Engine, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("z4j_brain_plugin.outbox.CLAIM_LIMIT", 3)
    healthy = CeleryDispatcher(HEALTHY_URL)
    outbox = make_outbox(engine, {("celery", "default"): healthy})
    schedule_id = add_schedule(engine, "default")
    fire_ids = [add_fire(engine, schedule_id, "default", queue) for _ in range(7)]
    try:
        async with running(outbox):
            for fire_id in fire_ids:
                await wait_for(status_is(engine, fire_id, "dispatched"), f"fire {fire_id}")
    finally:
        healthy.close()
    assert queue_length(HEALTHY_URL, queue) == 7


async def test_lane_survives_database_errors(tmp_path: Path, queue: str) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'late.db'}")
    healthy = CeleryDispatcher(HEALTHY_URL)
    outbox = make_outbox(engine, {("celery", "default"): healthy})
    [lane] = outbox.lanes
    try:
        async with running(outbox):
            # No schema yet: every claim fails until the migration runs.
            await wait_for(lambda: lane.database_failures >= 2, "the lane to fail on the database")
            upgrade(engine)
            fire_id = add_fire(engine, add_schedule(engine, "default"), "default", queue)
            outbox.wake()
            await wait_for(
                status_is(engine, fire_id, "dispatched"), "the fire after the schema appeared"
            )
    finally:
        healthy.close()
        engine.dispose()
    assert lane.database_failures == 0
    assert queue_length(HEALTHY_URL, queue) == 1
