"""Real arq and taskiq workers of the example applications, for tests.

Like ``tests.workers``: each ``start_*`` context manager starts a worker from
the repository root, waits until its log shows it is ready, and on exit
stops it by its PID. Runs are read with ``tests.workers.wait_for_runs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.workers import (
    POLL_INTERVAL,
    READY_TIMEOUT,
    STOP_GRACE,
    Worker,
    child_pids,
    run_worker,
    stop_process,
)

# arq logs the Redis server's details once it has connected to the queue.
ARQ_READY_MARKER = "redis_version="
# A taskiq worker process logs this after the broker's startup, before it
# waits for the first message.
TASKIQ_READY_MARKER = "Listening started."

# Seconds the taskiq main process gets to stop its worker process. A worker
# waiting in BRPOP or SUBSCRIBE does not wake up for the stop signal (its
# handler sets an asyncio event without waking the event loop), so after
# this grace the worker processes are killed by PID.
TASKIQ_STOP_GRACE = 3.0


@contextmanager
def start_arq_worker(url: str, output: Path, *, log_path: Path | None = None) -> Iterator[Worker]:
    """Run ``examples.arq_app.worker.WorkerSettings`` on the Redis URL and queue of ``url``.

    ``url`` has the dispatcher's form, ``redis://HOST:PORT/DB?queue_name=NAME``.
    """
    command = [sys.executable, "-m", "arq", "examples.arq_app.worker.WorkerSettings"]
    env = {"Z4J_ARQ_REDIS_URL": url}
    with run_worker("arq", command, env, output, log_path, ARQ_READY_MARKER, _stop_arq) as worker:
        yield worker


@contextmanager
def start_taskiq_worker(
    url: str, output: Path, *, log_path: Path | None = None
) -> Iterator[Worker]:
    """Run ``taskiq worker`` on ``examples.taskiq_app`` with one worker process.

    ``url`` has the dispatcher's form,
    ``redis://HOST:PORT/DB?broker=KIND&queue_name=NAME``. Tasks run in a
    child process, so a run's ``pid`` is one of ``child_pids(worker.pid)``.
    """
    command = [
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "examples.taskiq_app.app:broker",
        "examples.taskiq_app.tasks",
        "--workers=1",
        "--shutdown-timeout=2",
    ]
    env = {"Z4J_TASKIQ_BROKER_URL": url}
    with run_worker(
        "taskiq", command, env, output, log_path, TASKIQ_READY_MARKER, _stop_taskiq
    ) as worker:
        yield worker


def wait_until(
    condition: Callable[[], bool], description: str, *, timeout: float = READY_TIMEOUT
) -> None:
    """Poll ``condition`` until it holds, raising ``TimeoutError`` naming ``description``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{description}: still false after {timeout} s")
        time.sleep(POLL_INTERVAL)


def _stop_arq(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, STOP_GRACE)


def _stop_taskiq(process: subprocess.Popen[bytes]) -> None:
    children = child_pids(process.pid)
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=TASKIQ_STOP_GRACE)
        return
    except subprocess.TimeoutExpired:
        pass
    for pid in children:
        # Checked again because a PID of a child that has exited may be reused.
        if pid in child_pids(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stop_process(process, STOP_GRACE)
