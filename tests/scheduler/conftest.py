"""A real brain gRPC endpoint over mutual TLS and a scheduler with a hand-moved clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from z4j_brain_plugin.fires import FireRecorder
from z4j_brain_plugin.grpc_server import start_grpc_server
from z4j_brain_plugin.models import Fire, Project, Schedule, make_session_factory
from z4j_brain_plugin.pki import mint_loopback_pki
from z4j_scheduler.brain_client import BrainClient
from z4j_scheduler.leader import gate_for
from z4j_scheduler.scheduler import Scheduler

SECRET = b"tick-test-secret"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)



@pytest.fixture(scope="package")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="package", autouse=True)
async def shared_event_loop(anyio_backend: str) -> AsyncIterator[None]:
    """Run every test of this package in one event loop.

    grpc.aio can deliver a completion after a channel closed to the loop that
    created it; a loop per test would then see "Event loop is closed".
    """
    yield

class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.value = now

    def now(self) -> datetime:
        return self.value

    def advance(self, **delta: float) -> None:
        self.value += timedelta(**delta)


@dataclass
class Harness:
    engine: Engine
    clock: ManualClock
    scheduler: Scheduler
    client: BrainClient
    project_id: int

    def add(self, **overrides: Any) -> int:
        values: dict[str, Any] = {
            "project_id": self.project_id, "name": f"s{overrides.get('expression', '')}{len(overrides)}{id(overrides)}",
            "engine": "celery", "kind": "cron", "expression": "* * * * *", "timezone": "UTC",
            "task_name": "t", "args": [], "kwargs": {}, "catch_up": "skip", "revision": 1, "total_runs": 0,
            "next_run_at": self.clock.now(), "created_at": START, "updated_at": START,
        }
        values.update(overrides)
        with make_session_factory(self.engine, write=True).begin() as session:
            schedule = Schedule(**values)
            session.add(schedule)
            session.flush()
            return schedule.id

    def schedule(self, schedule_id: int) -> Schedule:
        with make_session_factory(self.engine)() as session:
            row = session.get(Schedule, schedule_id)
            assert row is not None
            return row

    def fires(self, schedule_id: int) -> list[Fire]:
        with make_session_factory(self.engine)() as session:
            statement = select(Fire).where(Fire.schedule_id == schedule_id).order_by(Fire.scheduled_for)
            return list(session.scalars(statement))


@pytest.fixture
async def harness(engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    with make_session_factory(engine, write=True).begin() as session:
        project = Project(slug="tick", name="tick", created_at=START)
        session.add(project)
        session.flush()
        project_id = project.id
    server_tls, client_tls = mint_loopback_pki(tmp_path / "pki")
    recorder = FireRecorder(make_session_factory(engine, write=True), lambda ids: None)
    server = await start_grpc_server(
        host="127.0.0.1", port=0, tls=server_tls, allowed_cns=["z4j-scheduler"], secrets=[SECRET], handler=recorder
    )
    client = BrainClient(
        f"127.0.0.1:{server.port}", ca_cert=client_tls.ca_cert, cert=client_tls.cert, key=client_tls.key, secret=SECRET
    )
    clock = ManualClock(START)
    try:
        await client.connect()
        scheduler = Scheduler(
            make_session_factory(engine), gate_for(engine), client, grace=timedelta(seconds=60), clock=clock,
            instance_id="test-leader",
        )
        yield Harness(engine, clock, scheduler, client, project_id)
        await scheduler.step_down()
    finally:
        await client.close()
        await server.stop(1.0)
