"""Real brain and scheduler processes on PostgreSQL and Redis, for the fault tests.

A :class:`FaultStack` runs one ``z4j-brain serve`` process (gRPC enabled, no
embedded scheduler) and any number of standalone ``z4j-scheduler serve``
processes against one PostgreSQL database. Fires go to Celery on Redis with
no worker, so every message stays in the Redis list named after the queue,
where :meth:`FaultStack.broker_task_ids` counts them. Every process is
stopped by its PID when the stack closes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import redis
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import OperationalError

from z4j_brain_plugin.models import Fire, LeaderState, Project, Schedule, make_engine
from z4j_brain_plugin.pki import MintedPki
from z4j_scheduler import store
from z4j_scheduler.wire.messages import slot_fire_id

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "fault-test-secret-0123456789abcdef"
BROKER_URL = "redis://127.0.0.1:6379/7"
TASK_NAME = "examples.celery_app.tasks.record_run"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL = 0.02
LOG_TAIL_CHARS = 4000

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """One started process, its log file, and the PID it is stopped by."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except FileNotFoundError:
            return "<no log>"

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(STOP_TIMEOUT)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the process, SIGKILL it after ``timeout`` seconds, and return its exit status."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.wait()


def start_process(name: str, command: list[str], env: Mapping[str, str], log_path: Path) -> Process:
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Process(name, popen, log_path)


@dataclass(frozen=True)
class Burst:
    """One-shot schedules created for a burst: schedule id to its single slot."""

    slots: dict[int, datetime]
    queue: str

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def fire_ids(self) -> dict[str, int]:
        return {
            slot_fire_id(schedule_id, slot): schedule_id for schedule_id, slot in self.slots.items()
        }

    @property
    def last_slot(self) -> datetime:
        return max(self.slots.values())


@dataclass
class Delivery:
    """What a burst left behind: fire history rows and broker messages."""

    # schedule id -> fire ids recorded for it
    history: dict[int, list[str]]
    # fire id -> (scheduled_for, trigger, status)
    rows: dict[str, tuple[datetime, str, str]]
    # task id -> messages with that id on the broker
    messages: Counter[str]

    @property
    def resent(self) -> int:
        """Broker messages beyond the first for their task id."""
        return sum(count - 1 for count in self.messages.values() if count > 1)


@dataclass
class FaultStack:
    workdir: Path
    database_url: str
    pki: MintedPki
    queue: str
    grace_seconds: float = 120.0
    brain_http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    brain: Process | None = None
    schedulers: dict[str, Process] = field(default_factory=dict)
    scheduler_ports: dict[str, int] = field(default_factory=dict)
    # Why restart_brain_if_down restarted the brain, once per restart.
    brain_restarts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine: Engine = make_engine(self.database_url)
        self.redis = redis.Redis.from_url(BROKER_URL, socket_timeout=10)
        self.redis.delete(self.queue)

    # Processes

    def start_brain(self) -> Process:
        server = self.pki.server
        env = {
            "PYTHONPATH": str(REPO_ROOT),
            "Z4J_DATABASE_URL": self.database_url,
            "Z4J_EMBEDDED_SCHEDULER": "false",
            "Z4J_SCHEDULER_GRPC_ENABLED": "true",
            "Z4J_SCHEDULER_GRPC_HOST": "127.0.0.1",
            "Z4J_SCHEDULER_GRPC_PORT": str(self.grpc_port),
            "Z4J_SCHEDULER_GRPC_TLS_CA": str(server.ca_cert),
            "Z4J_SCHEDULER_GRPC_TLS_CERT": str(server.cert),
            "Z4J_SCHEDULER_GRPC_TLS_KEY": str(server.key),
            "Z4J_HTTP_HOST": "127.0.0.1",
            "Z4J_HTTP_PORT": str(self.brain_http_port),
            "Z4J_SECRET": SECRET,
            "Z4J_CELERY_BROKER_URL": BROKER_URL,
            "Z4J_DISPATCH_RETRY_INITIAL": "0.2",
            "Z4J_DISPATCH_RETRY_MAX": "1",
        }
        command = [sys.executable, "-m", "z4j_brain_plugin.cli", "serve"]
        self.brain = start_process("brain", command, env, self.workdir / "brain.log")
        self.wait_for(self._brain_ready, "the brain's gRPC endpoint", START_TIMEOUT)
        return self.brain

    def restart_brain_if_down(self) -> bool:
        """Restart the brain when it exited or its gRPC port refuses connections; True if it did.

        This is the liveness check a service manager would run: process
        alive, and the gRPC port accepting TCP connections.
        """
        if self.brain is None or (self.brain.alive() and self._grpc_accepts()):
            return False
        status = self.brain.terminate()
        self.brain_restarts.append(
            f"exit status {status}" if status not in (0, -15) else "gRPC port closed"
        )
        self.start_brain()
        return True

    def _grpc_accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=2):
                return True
        except OSError:
            return False

    def start_scheduler(self, name: str) -> Process:
        """Start ``z4j-scheduler serve`` as instance ``name``; wait until its /healthz responds."""
        process = self.start_scheduler_nowait(name)
        self.wait_for(
            lambda: self._healthy(name), f"scheduler {name} to serve /healthz", START_TIMEOUT
        )
        return process

    def start_schedulers(self, names: Iterable[str]) -> None:
        """Start several schedulers at once and wait until each serves /healthz."""
        names = list(names)
        for name in names:
            self.start_scheduler_nowait(name)
        for name in names:
            self.wait_for(
                partial(self._healthy, name), f"scheduler {name} to serve /healthz", START_TIMEOUT
            )

    def start_scheduler_nowait(self, name: str) -> Process:
        client = self.pki.clients["z4j-scheduler"]
        port = self.scheduler_ports.setdefault(name, free_port())
        command = [
            sys.executable,
            "-m",
            "z4j_scheduler",
            "serve",
            "--database-url",
            self.database_url,
            "--brain",
            f"127.0.0.1:{self.grpc_port}",
            "--tls-ca",
            str(client.ca_cert),
            "--tls-cert",
            str(client.cert),
            "--tls-key",
            str(client.key),
            "--grace",
            str(self.grace_seconds),
            "--instance-id",
            name,
            "--http-port",
            str(port),
        ]
        env = {"PYTHONPATH": str(REPO_ROOT), "Z4J_SECRET": SECRET}
        process = start_process(name, command, env, self.workdir / f"{name}.log")
        self.schedulers[name] = process
        return process

    def readyz(self, name: str) -> dict[str, Any] | None:
        """Return the /readyz body of scheduler ``name``, or None when it does not respond."""
        try:
            response = httpx.get(f"http://127.0.0.1:{self.scheduler_ports[name]}/readyz", timeout=5)
        except httpx.TransportError:
            return None
        body: dict[str, Any] = response.json()
        return body

    def close(self) -> None:
        for process in [*self.schedulers.values(), *([self.brain] if self.brain else [])]:
            process.terminate()
        self.redis.delete(self.queue)
        self.redis.close()
        self.engine.dispose()

    def logs(self) -> str:
        processes = [*([self.brain] if self.brain else []), *self.schedulers.values()]
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.log_tail()}" for p in processes)

    def wait_for(
        self, predicate: Callable[[], T | None], description: str, timeout: float = 60.0
    ) -> T:
        """Poll ``predicate`` until it returns a true value; fail with the logs after ``timeout`` s.

        A database that does not respond counts as "not yet", so the wait
        spans a PostgreSQL restart.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
            except OperationalError:
                value = None
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {description}\n{self.logs()}"
                )
            time.sleep(POLL)

    def _brain_ready(self) -> bool:
        assert self.brain is not None
        if not self.brain.alive():
            raise AssertionError(
                f"brain exited with {self.brain.popen.returncode}\n{self.brain.log_tail()}"
            )
        try:
            body = httpx.get(f"http://127.0.0.1:{self.brain_http_port}/readyz", timeout=5).json()
        except (httpx.TransportError, ValueError):
            return False
        return "grpc" in body.get("checks", {})

    def _healthy(self, name: str) -> bool:
        process = self.schedulers[name]
        if not process.alive():
            raise AssertionError(
                f"scheduler {name} exited with {process.popen.returncode}\n{process.log_tail()}"
            )
        try:
            return (
                httpx.get(
                    f"http://127.0.0.1:{self.scheduler_ports[name]}/healthz", timeout=5
                ).status_code
                == 200
            )
        except httpx.TransportError:
            return False

    # Database

    def leader(self) -> store.LeaderRecord:
        with self.engine.connect() as connection:
            statement = select(LeaderState.epoch, LeaderState.leader_id, LeaderState.acquired_at)
            row = connection.execute(statement).one()
        return store.LeaderRecord(int(row[0]), row[1], row[2])

    def leader_after(self, epoch: int) -> store.LeaderRecord | None:
        """Return the leader row when its epoch is above ``epoch``, else None."""
        record = self.leader()
        return record if record.epoch > epoch else None

    def wait_for_leader(self, after_epoch: int = 0, timeout: float = 60.0) -> store.LeaderRecord:
        """Wait until an instance claims an epoch above ``after_epoch``; return the leader row."""
        return self.wait_for(
            partial(self.leader_after, after_epoch),
            f"a leader with an epoch above {after_epoch}",
            timeout,
        )

    def is_ready(self, name: str) -> bool:
        """Return True when /readyz of scheduler ``name`` reports status ready."""
        body = self.readyz(name)
        return body is not None and body["status"] == "ready"

    def create_burst(
        self, count: int, *, lead: float, spread: float, catch_up: str = "fire_one_missed"
    ) -> Burst:
        """Insert ``count`` one-shot schedules, ``lead`` s ahead and spread over ``spread`` s."""
        now = datetime.now(UTC)
        first = now + timedelta(seconds=lead)
        step = timedelta(seconds=spread) / count
        instants = [first + step * index for index in range(count)]
        with self.engine.begin() as connection:
            project_id = self._project(connection, now)
            rows = [
                self._one_shot(project_id, index, instant, catch_up, now)
                for index, instant in enumerate(instants)
            ]
            ids = connection.execute(
                insert(Schedule).returning(Schedule.id, Schedule.next_run_at), rows
            ).all()
        return Burst(
            {int(schedule_id): slot for schedule_id, slot in ids if slot is not None}, self.queue
        )

    def create_schedules(self, rows: list[dict[str, Any]]) -> list[int]:
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            project_id = self._project(connection, now)
            values = [self._schedule_values(project_id, now, row) for row in rows]
            return [
                int(row[0])
                for row in connection.execute(insert(Schedule).returning(Schedule.id), values)
            ]

    def set_cursors(self, ids: list[int], cursor: datetime) -> None:
        """Write ``cursor`` into the schedules directly, as another tool or a restore would."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Schedule).where(Schedule.id.in_(ids)).values(next_run_at=cursor)
            )

    def schedule(self, schedule_id: int) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(select(Schedule).where(Schedule.id == schedule_id)).one()

    def fire_count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Fire)) or 0)

    def dispatched_count(self) -> int:
        with self.engine.connect() as connection:
            statement = select(func.count()).select_from(Fire).where(Fire.status == "dispatched")
            return int(connection.scalar(statement) or 0)

    def fires_of(self, schedule_ids: Iterable[int]) -> list[Any]:
        with self.engine.connect() as connection:
            statement = (
                select(Fire)
                .where(Fire.schedule_id.in_(list(schedule_ids)))
                .order_by(Fire.scheduled_for)
            )
            return list(connection.execute(statement).all())

    def delivery(self) -> Delivery:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Fire.id, Fire.schedule_id, Fire.scheduled_for, Fire.trigger, Fire.status)
            )
            history: dict[int, list[str]] = {}
            details: dict[str, tuple[datetime, str, str]] = {}
            for fire_id, schedule_id, scheduled_for, trigger, status in rows:
                history.setdefault(schedule_id, []).append(fire_id)
                details[fire_id] = (scheduled_for, trigger, status)
        return Delivery(history, details, self.broker_task_ids())

    def broker_task_ids(self) -> Counter[str]:
        """Count the Celery messages in the queue's Redis list by task id."""
        ids: Counter[str] = Counter()
        messages = cast(list[bytes], self.redis.lrange(self.queue, 0, -1))
        for raw in messages:
            message = json.loads(raw)
            ids[message["headers"]["id"]] += 1
        return ids

    def _project(self, connection: Any, now: datetime) -> int:
        existing = connection.scalar(select(Project.id).where(Project.slug == "faults"))
        if existing is not None:
            return int(existing)
        statement = (
            insert(Project)
            .values(slug="faults", name="faults", created_at=now)
            .returning(Project.id)
        )
        return int(connection.scalar(statement))

    def _one_shot(
        self, project_id: int, index: int, instant: datetime, catch_up: str, now: datetime
    ) -> dict[str, Any]:
        row = {
            "name": f"burst-{index}",
            "kind": "one_shot",
            "expression": instant.isoformat(),
            "catch_up": catch_up,
            "next_run_at": instant,
            "args": [index],
        }
        return self._schedule_values(project_id, now, row)

    def _schedule_values(
        self, project_id: int, now: datetime, row: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "project_id": project_id,
            "engine": "celery",
            "connection": "default",
            "timezone": "UTC",
            "start_at": None,
            "task_name": TASK_NAME,
            "args": [],
            "kwargs": {},
            "queue": self.queue,
            "catch_up": "skip",
            "enabled": True,
            "source": "api",
            "revision": 1,
            "total_runs": 0,
            "created_at": now,
            "updated_at": now,
            **row,
        }
