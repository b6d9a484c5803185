"""Real worker processes of the example applications, for tests.

Each ``start_*`` function is a context manager that starts a worker from the
repository root, waits until its log shows it is ready, and on exit stops it
by its PID: SIGTERM, then SIGKILL after a grace period. Every task run
appends a JSON line to ``output`` (see ``examples/runlog.py``), which
``wait_for_runs`` polls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# Generous, because a busy 2-core machine can take several seconds to import
# Celery and connect.
READY_TIMEOUT = 60.0
RUN_TIMEOUT = 30.0
STOP_GRACE = 10.0
POLL_INTERVAL = 0.05
LOG_TAIL_CHARS = 3000

CELERY_READY_MARKER = " ready."
HUEY_READY_MARKER = "The following commands are available"

Run = dict[str, Any]


@dataclass(frozen=True)
class Worker:
    """A started worker process, its log file and the run log it appends to."""

    kind: str
    process: subprocess.Popen[bytes]
    log_path: Path
    output: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        """Return the end of the worker's log, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "<no log>"
        return text[-LOG_TAIL_CHARS:]

    def check_alive(self) -> None:
        """Raise ``AssertionError`` with the log tail when the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"{self.kind} worker {self.pid} exited with code {code}; log:\n{self.log_tail()}"
            )


@contextmanager
def start_celery_worker(
    broker_url: str,
    queues: Sequence[str],
    output: Path,
    *,
    log_path: Path | None = None,
) -> Iterator[Worker]:
    """Run ``examples.celery_app`` on ``queues`` with one solo-pool process.

    Mingle and gossip are off because they slow start-up and talk to other
    workers that a test does not have. Heartbeats stay on: their timer wakes
    the worker's event loop, and without it a warm shutdown on AMQP waits
    for the next message to arrive.
    """
    if not queues:
        raise ValueError("queues is empty; give at least one queue name")
    command = [
        sys.executable,
        "-m",
        "celery",
        "--app=examples.celery_app.app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={','.join(queues)}",
        f"--hostname=z4j-test-{uuid.uuid4().hex[:12]}@%h",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=INFO",
    ]
    env = {"Z4J_CELERY_BROKER_URL": broker_url}
    with run_worker("celery", command, env, output, log_path, CELERY_READY_MARKER) as worker:
        yield worker


@contextmanager
def start_huey_consumer(
    url: str, output: Path, *, log_path: Path | None = None
) -> Iterator[Worker]:
    """Run a Huey consumer of ``examples.huey_app`` with storage ``url`` and one thread.

    The polling delay is capped at half a second because the SQLite storage
    is polled, and Huey's default cap of 10 s would slow every test down.
    """
    command = [
        sys.executable,
        "-m",
        "huey.bin.huey_consumer",
        "examples.huey_app.tasks.huey",
        "--workers=1",
        "--worker-type=thread",
        "--no-periodic",
        "--max-delay=0.5",
    ]
    env = {"Z4J_HUEY_URL": url}
    with run_worker("huey", command, env, output, log_path, HUEY_READY_MARKER) as worker:
        yield worker


StopFunction = Callable[["subprocess.Popen[bytes]"], None]


@contextmanager
def run_worker(
    kind: str,
    command: Sequence[str],
    env: Mapping[str, str],
    output: Path,
    log_path: Path | None,
    ready_marker: str,
    stop: StopFunction | None = None,
) -> Iterator[Worker]:
    """Start ``command`` from the repository root and yield it once its log shows ``ready_marker``.

    On exit ``stop`` ends the process; the default is SIGTERM, then SIGKILL
    after a grace period.
    """
    log_path = log_path or output.parent / f"{kind}-worker-{uuid.uuid4().hex[:8]}.log"
    worker_env = {**os.environ, **env, "Z4J_EXAMPLE_OUTPUT": str(output), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=worker_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(kind, process, log_path, output)
    try:
        _wait_until_ready(worker, ready_marker, READY_TIMEOUT)
        yield worker
    finally:
        if stop is None:
            stop_process(process, STOP_GRACE)
        else:
            stop(process)


def _wait_until_ready(worker: Worker, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while marker not in worker.log_tail():
        worker.check_alive()
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{worker.kind} worker {worker.pid} not ready after {timeout} s; log:\n"
                f"{worker.log_tail()}"
            )
        time.sleep(POLL_INTERVAL)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop ``process`` by its PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def child_pids(pid: int) -> list[int]:
    """Return the PIDs of the live child processes of ``pid``, read from Linux ``/proc``."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "children").read_text(encoding="ascii")
        except OSError:
            continue
        children.extend(int(field) for field in text.split())
    return children


def read_runs(output: Path) -> list[Run]:
    """Return the runs logged in ``output`` so far, leaving out a line still being written."""
    try:
        text = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line]


def wait_for_runs(
    output: Path,
    predicate: Callable[[Run], bool],
    timeout: float = RUN_TIMEOUT,
    *,
    count: int = 1,
    worker: Worker | None = None,
) -> list[Run]:
    """Poll ``output`` until ``count`` runs match ``predicate`` and return the matching runs.

    Raises ``TimeoutError`` listing what was logged when ``timeout`` seconds
    pass first, and ``AssertionError`` at once when ``worker`` has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs = read_runs(output)
        matching = [run for run in runs if predicate(run)]
        if len(matching) >= count:
            return matching
        if worker is not None:
            worker.check_alive()
        if time.monotonic() >= deadline:
            log = f"; worker log:\n{worker.log_tail()}" if worker is not None else ""
            raise TimeoutError(
                f"{len(matching)} of {count} expected run(s) in {output} after {timeout} s; "
                f"runs logged: {runs}{log}"
            )
        time.sleep(POLL_INTERVAL)
