"""The scheduler's /healthz, /readyz and /metrics, its settings and its start-up errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import ValidationError

from tests.scheduler.conftest import START, Harness
from z4j_brain_plugin.models import make_engine, make_session_factory
from z4j_scheduler.health import (
    DatabaseView,
    HealthApp,
    HealthServer,
    HttpBindError,
    LeaderView,
    bind_socket,
    readiness,
)
from z4j_scheduler.serve import EXIT_CONFIG
from z4j_scheduler.settings import SchedulerSettings

LEADER = LeaderView("s1", 7, "127.0.0.1:7701", brain_ok=True)


def test_readiness_of_a_leader() -> None:
    status, body = readiness(LEADER, DatabaseView(ok=True, due_backlog=3))
    assert status == 200
    assert body["status"] == "ready"
    assert body["role"] == "leader"
    assert body["epoch"] == 7
    assert body["instance_id"] == "s1"
    assert body["checks"]["database"] == {"ok": True, "due_backlog": 3}
    assert body["checks"]["brain"] == {"ok": True, "target": "127.0.0.1:7701"}


def test_readiness_of_a_follower() -> None:
    follower = LeaderView("s2", None, "127.0.0.1:7701", brain_ok=True)
    status, body = readiness(follower, DatabaseView(ok=True, due_backlog=0))
    assert status == 200
    assert body["role"] == "follower"
    assert body["epoch"] is None


@pytest.mark.parametrize(
    ("leader", "database"),
    [
        (LEADER, DatabaseView(ok=False, error="OperationalError")),
        (
            LeaderView("s1", 7, "127.0.0.1:7701", brain_ok=False),
            DatabaseView(ok=True, due_backlog=0),
        ),
    ],
)
def test_readiness_unavailable(leader: LeaderView, database: DatabaseView) -> None:
    status, body = readiness(leader, database)
    assert status == 503
    assert body["status"] == "unavailable"


@pytest.fixture
async def endpoint(harness: Harness) -> AsyncIterator[str]:
    """The health server of the harness scheduler on a free loopback port."""
    scheduler = harness.scheduler

    def view() -> LeaderView:
        return LeaderView(
            scheduler.instance_id, scheduler.epoch, "brain:1", scheduler.brain_ok is not False
        )

    app = HealthApp(view, make_session_factory(harness.engine), clock=harness.clock.now).app()
    server = HealthServer(app, bind_socket("127.0.0.1", 0))
    host, port = server.address
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            with anyio.fail_after(30):
                while True:
                    try:
                        await client.get("/healthz")
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.02)
        yield f"http://{host}:{port}"
        server.stop()


@pytest.mark.anyio
async def test_endpoints_show_leader_epoch_and_backlog(harness: Harness, endpoint: str) -> None:
    for index in range(2):
        harness.add(name=f"due-{index}", next_run_at=START - timedelta(minutes=index))
    harness.add(name="later", next_run_at=START + timedelta(hours=1))
    assert await harness.scheduler.acquire()
    async with httpx.AsyncClient(base_url=endpoint, timeout=10) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        scraped = (await client.get("/metrics")).text
        await harness.scheduler.step_down()
        after = (await client.get("/readyz")).json()
        scraped_after = (await client.get("/metrics")).text
    assert health.status_code == 200
    assert ready.status_code == 200
    body = ready.json()
    assert body["role"] == "leader"
    assert body["epoch"] == 1
    assert body["checks"]["database"]["due_backlog"] == 2
    assert "z4j_scheduler_leader 1.0" in scraped
    assert "z4j_scheduler_epoch 1.0" in scraped
    assert "z4j_scheduler_due_backlog 2.0" in scraped
    assert after["role"] == "follower"
    assert "z4j_scheduler_leader 0.0" in scraped_after


@pytest.mark.anyio
async def test_readyz_reports_unreachable_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-directory' / 'z4j.db'}")
    app = HealthApp(lambda: LEADER, make_session_factory(engine)).app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client:
        response = await client.get("/readyz")
    engine.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"ok": False, "error": "OperationalError"}


def test_bind_conflict_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HttpBindError, match=f"127.0.0.1:{port}.*Z4J_SCHEDULER_HTTP_PORT"):
            bind_socket("127.0.0.1", port)


def test_serve_exits_when_http_port_is_taken(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("unused: the process stops before it reads them\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "Z4J_SECRET": "s", "Z4J_SCHEDULER_HTTP_PORT": str(port)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "z4j_scheduler",
                "serve",
                "--database-url",
                f"sqlite:///{tmp_path / 'z4j.db'}",
                "--tls-ca",
                str(tmp_path / "ca.pem"),
                "--tls-cert",
                str(tmp_path / "cert.pem"),
                "--tls-key",
                str(tmp_path / "key.pem"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == EXIT_CONFIG
    assert f"invalid health endpoint address 127.0.0.1:{port}" in result.stderr
    assert "Z4J_SCHEDULER_HTTP_PORT" in result.stderr


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Z4J_RECONCILE_INTERVAL", "60")
    monkeypatch.setenv("Z4J_SCHEDULER_HTTP_PORT", "9100")
    monkeypatch.setenv("Z4J_INSTANCE_ID", "scheduler-a")
    settings = SchedulerSettings()
    assert settings.reconcile_interval == 60
    assert settings.scheduler_http_port == 9100
    assert settings.scheduler_http_host == "127.0.0.1"
    assert settings.instance_id == "scheduler-a"


def test_settings_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("Z4J_RECONCILE_INTERVAL", "Z4J_SCHEDULER_HTTP_PORT", "Z4J_RECONCILE_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    settings = SchedulerSettings()
    assert settings.reconcile_interval == 900
    assert settings.reconcile_batch_size == 1000
    assert settings.scheduler_http_port is None
    with pytest.raises(ValidationError, match="reconcile_interval"):
        SchedulerSettings(reconcile_interval=-1)
    with pytest.raises(ValidationError, match="scheduler_http_port"):
        SchedulerSettings(scheduler_http_port=70000)
