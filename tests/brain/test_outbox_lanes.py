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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from sqlalchemy import Engine, event, insert, select

from tests.dispatchers.support import closed_port
from z4j_brain_plugin.dispatchers.base import Dispatcher, DispatchRequest
from z4j_brain_plugin.dispatchers.celery import CeleryDispatcher
from z4j_brain_plugin.fires import FireRecorder, PendingFire
from z4j_brain_plugin.migrate import upgrade
from z4j_brain_plugin.models import Fire, Project, Schedule, make_engine, make_session_factory
from z4j_brain_plugin.outbox import Lane, Outbox, RetryPolicy
from z4j_scheduler.wire.messages import FireRequest, Trigger, slot_fire_id

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

HEALTHY_URL = "redis://127.0.0.1:6379/14"
DEADLINE = 30.0
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def add_schedule(engine: Engine, connection: str, queue: str | None = None) -> int:
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
            queue=queue,
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


def slot_requests(schedule_id: int, count: int) -> list[FireRequest]:
    """Return a leader's requests for ``count`` consecutive one-second slots, all due by now."""
    start = datetime.now(UTC) - timedelta(seconds=count)
    slots = [start + timedelta(seconds=index) for index in range(count)]
    return [
        FireRequest(
            slot_fire_id(schedule_id, slot),
            schedule_id,
            slot,
            Trigger.SCHEDULE,
            1,
            slot + timedelta(seconds=1),
        )
        for slot in slots
    ]


def first_pass_done(lane: Lane) -> Callable[[], bool]:
    # The start-up pass claims and then counts failed fires, which clears retry_at.
    return lambda: not lane.claim_needed and lane.retry_at is None


@contextmanager
def counted_fire_selects(engine: Engine) -> Iterator[list[str]]:
    """Collect every SELECT on schedule_fires that ``engine`` runs inside the block."""
    statements: list[str] = []

    def collect(
        connection: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "schedule_fires" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", collect)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", collect)


@pytest.fixture
def probe(database_url: str) -> Iterator[Engine]:
    """A second engine on the test database, so the test's reads are not counted as the outbox's."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@dataclass
class Recording:
    """An outbox with one lane on the healthy Redis, fed by a fire recorder."""

    outbox: Outbox
    recorder: FireRecorder
    lane: Lane


@pytest.fixture
def recording(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    # No sweep during the test, so only the path under test can send a fire.
    monkeypatch.setattr("z4j_brain_plugin.outbox.IDLE_WAIT", 3600.0)
    healthy = CeleryDispatcher(HEALTHY_URL)
    outbox = make_outbox(engine, {("celery", "default"): healthy})
    recorder = FireRecorder(make_session_factory(engine, write=True), outbox.wake)
    try:
        yield Recording(outbox, recorder, outbox.lanes[0])
    finally:
        healthy.close()


async def test_recorded_fire_reaches_broker_without_claim(
    recording: Recording, engine: Engine, probe: Engine, queue: str
) -> None:
    outbox, recorder, lane = recording.outbox, recording.recorder, recording.lane
    [request] = slot_requests(add_schedule(engine, "default", queue), 1)
    async with running(outbox):
        await wait_for(first_pass_done(lane), "the start-up pass")
        with counted_fire_selects(engine) as selects:
            result = await recorder(0, [request], [])
            await wait_for(status_is(probe, request.fire_id, "dispatched"), "the recorded fire")
    assert result.fires[0].status == "pending"
    assert selects == []
    assert lane.passes == 1
    assert fire_row(probe, request.fire_id).task_id == request.fire_id
    assert queue_length(HEALTHY_URL, queue) == 1


async def test_memory_and_claim_send_each_fire_once(
    recording: Recording, engine: Engine, probe: Engine, queue: str
) -> None:
    outbox, recorder, lane = recording.outbox, recording.recorder, recording.lane
    requests = slot_requests(add_schedule(engine, "default", queue), 9)
    together, late, last = requests[:4], requests[4:8], requests[8:]
    async with running(outbox):
        await wait_for(first_pass_done(lane), "the start-up pass")

        # Recorded without a hand-off, so a claim and the in-memory copies arrive together.
        _, recorded = recorder.record_fires(0, together, [])
        outbox.wake()
        outbox.wake(recorded)
        for fire in recorded:
            await wait_for(status_is(probe, fire.fire_id, "dispatched"), fire.fire_id)

        # The in-memory copies arrive only after a claim has sent the fires.
        _, recorded = recorder.record_fires(0, late, [])
        outbox.wake()
        for fire in recorded:
            await wait_for(status_is(probe, fire.fire_id, "dispatched"), fire.fire_id)
        outbox.wake(recorded)

        # The lane takes its queue in order, so once this fire is sent the
        # late copies have been dropped or sent.
        await recorder(0, last, [])
        await wait_for(status_is(probe, last[0].fire_id, "dispatched"), "the last fire")
    assert queue_length(HEALTHY_URL, queue) == len(requests)


async def test_queue_overflow_falls_back_to_claim(
    recording: Recording, engine: Engine, probe: Engine, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("z4j_brain_plugin.outbox.QUEUE_LIMIT", 3)
    outbox, recorder, lane = recording.outbox, recording.recorder, recording.lane
    requests = slot_requests(add_schedule(engine, "default", queue), 7)
    async with running(outbox):
        await wait_for(first_pass_done(lane), "the start-up pass")
        # One frame of seven fires: three fit the queue, four are left to a claim.
        await recorder(0, requests, [])
        for request in requests:
            await wait_for(status_is(probe, request.fire_id, "dispatched"), request.fire_id)
    assert lane.overflowed == 4
    assert queue_length(HEALTHY_URL, queue) == 7


async def test_fire_of_unconfigured_connection_waits_for_sweep(engine: Engine, queue: str) -> None:
    outbox = make_outbox(engine, {("celery", "default"): CeleryDispatcher(HEALTHY_URL)})
    recorder = FireRecorder(make_session_factory(engine, write=True), outbox.wake)
    [request] = slot_requests(add_schedule(engine, "removed", queue), 1)
    [lane] = outbox.lanes
    try:
        _, recorded = recorder.record_fires(0, [request], [])
        outbox.wake(recorded)
        assert lane.queued == []

        attempted = await outbox.dispatch_due()
    finally:
        lane.dispatcher.close()  # type: ignore[union-attr]

    row = fire_row(engine, request.fire_id)
    assert attempted == 1
    assert row.status == "failed"
    assert "no broker is configured for connection 'removed'" in row.last_error


def pending(fire_id: str, connection: str = "default", due_at: datetime = NOW) -> PendingFire:
    """Return a fire as the recorder hands it over; these checks never send it."""
    return PendingFire(
        fire_id,
        "celery",
        connection,
        due_at,
        0,
        DispatchRequest(fire_id, 1, "lanes.task", (), {}, None),
        due_at,
    )


def queued_ids(lane: Lane) -> list[str]:
    return [fire.fire_id for _, _, fire in sorted(lane.queued)]


def test_lane_drops_queued_fires_a_claim_returned() -> None:
    lane = Lane(("celery", "default"), None)
    claimed = [pending("a"), pending("b")]
    lane.hand_over(pending("b"))
    lane.hand_over(pending("c"))

    assert fire_ids(lane.take_fires(claimed, NOW)) == ["a", "b", "c"]

    # A copy handed over after the claim that returned it.
    lane.hand_over(pending("a"))
    lane.hand_over(pending("d"))
    assert fire_ids(lane.take_fires([], NOW)) == ["d"]
    assert lane.queued == []


def test_lane_keeps_early_fire_until_slot() -> None:
    lane = Lane(("celery", "default"), None)
    later = NOW + timedelta(seconds=2)
    lane.hand_over(pending("later", due_at=later))
    lane.hand_over(pending("now"))

    assert lane.next_due == NOW
    assert fire_ids(lane.take_fires([], NOW)) == ["now"]
    assert lane.next_due == later
    assert fire_ids(lane.take_fires([], later - timedelta(microseconds=1))) == []
    assert fire_ids(lane.take_fires([], later)) == ["later"]
    assert lane.next_due is None


def test_lane_pass_takes_at_most_claim_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("z4j_brain_plugin.outbox.CLAIM_LIMIT", 2)
    lane = Lane(("celery", "default"), None)
    for fire_id in ("a", "b", "c"):
        lane.hand_over(pending(fire_id))

    assert fire_ids(lane.take_fires([pending("claimed")], NOW)) == ["claimed", "a"]
    assert fire_ids(lane.take_fires([], NOW)) == ["b", "c"]


def test_full_lane_queue_asks_for_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("z4j_brain_plugin.outbox.QUEUE_LIMIT", 2)
    lane = Lane(("celery", "default"), None, claim_needed=False)
    for fire_id in ("a", "b", "c"):
        lane.hand_over(pending(fire_id))

    assert queued_ids(lane) == ["a", "b"]
    assert lane.claim_needed
    assert lane.overflowed == 1


def test_full_queue_claims_early_fire_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("z4j_brain_plugin.outbox.QUEUE_LIMIT", 1)
    lane = Lane(("celery", "default"), None, claim_needed=False)
    lane.hand_over(pending("a"))
    lane.hand_over(pending("ahead", due_at=NOW + timedelta(seconds=5)))

    assert queued_ids(lane) == ["a"]
    assert lane.claim_at == NOW + timedelta(seconds=5)


def fire_ids(fires: list[PendingFire]) -> list[str]:
    return [fire.fire_id for fire in fires]


def test_wake_routes_fires_by_connection() -> None:
    engine = make_engine("sqlite://")
    dispatchers: dict[tuple[str, str], Dispatcher] = {
        ("celery", "a"): CeleryDispatcher(HEALTHY_URL),
        ("celery", "b"): CeleryDispatcher(HEALTHY_URL),
    }
    outbox = make_outbox(engine, dispatchers)
    first, second = outbox.lanes
    try:
        for lane in outbox.lanes:
            lane.claim_needed = False
        outbox.wake([pending("1", "a"), pending("2", "b"), pending("3", "a"), pending("4", "gone")])
        assert queued_ids(first) == ["1", "3"]
        assert queued_ids(second) == ["2"]
        assert not first.claim_needed
        assert not second.claim_needed

        # Without fires, every lane claims from the table on its next pass.
        outbox.wake()
        assert first.claim_needed
        assert second.claim_needed
    finally:
        for dispatcher in dispatchers.values():
            dispatcher.close()
        engine.dispose()


def ahead_request(schedule_id: int, seconds: float) -> FireRequest:
    """Return a request for a slot ``seconds`` from now, as a leader sending ahead builds it."""
    slot = datetime.now(UTC) + timedelta(seconds=seconds)
    return FireRequest(
        slot_fire_id(schedule_id, slot), schedule_id, slot, Trigger.SCHEDULE, 1, slot
    )


async def test_early_fire_reaches_broker_at_slot(
    recording: Recording, engine: Engine, probe: Engine, queue: str
) -> None:
    outbox, recorder, lane = recording.outbox, recording.recorder, recording.lane
    request = ahead_request(add_schedule(engine, "default", queue), 3.0)
    slot = request.scheduled_for.timestamp()
    async with running(outbox):
        await wait_for(first_pass_done(lane), "the start-up pass")
        result = await recorder(0, [request], [])
        length = queue_length(HEALTHY_URL, queue)
        checked_before_slot = time.time() < slot
        await wait_for(status_is(probe, request.fire_id, "dispatched"), "the fire")
    assert result.fires[0].status == "pending"
    if checked_before_slot:
        assert length == 0
    row = fire_row(probe, request.fire_id)
    assert row.fired_at == row.scheduled_for <= row.dispatched_at
    assert queue_length(HEALTHY_URL, queue) == 1


async def test_early_fire_survives_restart(
    engine: Engine, probe: Engine, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No sweep: only the slot's own timer can send the fire in time.
    monkeypatch.setattr("z4j_brain_plugin.outbox.IDLE_WAIT", 3600.0)
    request = ahead_request(add_schedule(engine, "default", queue), 2.0)
    # Recorded by a brain that stopped before the slot, so it is in no lane's memory.
    FireRecorder(make_session_factory(engine, write=True), lambda fires: None).record_fires(
        0, [request], []
    )
    healthy = CeleryDispatcher(HEALTHY_URL)
    outbox = make_outbox(engine, {("celery", "default"): healthy})
    try:
        async with running(outbox):
            await wait_for(status_is(probe, request.fire_id, "dispatched"), "the fire")
    finally:
        healthy.close()
    row = fire_row(probe, request.fire_id)
    assert row.scheduled_for <= row.dispatched_at
    assert queue_length(HEALTHY_URL, queue) == 1
