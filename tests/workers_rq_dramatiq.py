"""Real RQ and Dramatiq workers of the example applications, for tests.

Like ``tests.workers``: each ``start_*`` context manager starts a worker from
the repository root, waits until its log shows it is ready, and on exit
stops it by its PID. Runs are read with ``tests.workers.wait_for_runs``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.workers import (
    STOP_GRACE,
    Worker,
    child_pids,
    run_worker,
    stop_process,
)

# RQ logs this once it has registered itself and is about to wait for jobs.
RQ_READY_MARKER = "*** Listening on"
# A Dramatiq worker process logs this after its worker threads have started.
DRAMATIQ_READY_MARKER = "Worker process is ready for action."

# Milliseconds a Dramatiq worker process waits for its threads on shutdown.
DRAMATIQ_SHUTDOWN_TIMEOUT_MS = 5000


@contextmanager
def start_rq_worker(
    redis_url: str,
    queues: Sequence[str],
    output: Path,
    *,
    name: str | None = None,
    serializer: str = "pickle",
    log_path: Path | None = None,
) -> Iterator[Worker]:
    """Run ``rq worker`` on ``queues`` of the plain Redis URL ``redis_url``.

    The worker forks one work horse per job, as RQ does by default, so a
    run's ``pid`` is not the worker's. ``name`` becomes the worker's name,
    which appears in the names of its Redis keys.
    """
    if not queues:
        raise ValueError("queues is empty; give at least one queue name")
    command = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        f"--url={redis_url}",
        f"--name={name or f'z4j-test-{uuid.uuid4().hex[:12]}'}",
        f"--serializer={serializer}",
        "--path=.",
        *queues,
    ]
    with run_worker("rq", command, {}, output, log_path, RQ_READY_MARKER, _stop_rq) as worker:
        yield worker


@contextmanager
def start_dramatiq_worker(
    broker_url: str, queues: Sequence[str], output: Path, *, log_path: Path | None = None
) -> Iterator[Worker]:
    """Run the ``dramatiq`` command on ``examples.dramatiq_app.tasks``, consuming only ``queues``.

    ``broker_url`` has the dispatcher's form. The queues are passed in
    ``Z4J_DRAMATIQ_QUEUES`` so that the application declares them, and in
    ``--queues`` so that the worker consumes no other queue. Actors run in a
    child process, so a run's ``pid`` is not the worker's.
    """
    if not queues:
        raise ValueError("queues is empty; give at least one queue name")
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "examples.dramatiq_app.tasks",
        "--processes=1",
        "--threads=2",
        f"--worker-shutdown-timeout={DRAMATIQ_SHUTDOWN_TIMEOUT_MS}",
        "--queues",
        *queues,
    ]
    env = {"Z4J_DRAMATIQ_BROKER_URL": broker_url, "Z4J_DRAMATIQ_QUEUES": ",".join(queues)}
    with run_worker(
        "dramatiq", command, env, output, log_path, DRAMATIQ_READY_MARKER, _stop_with_children
    ) as worker:
        yield worker


def _stop_rq(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM is RQ's warm shutdown: an idle worker exits at once.
    stop_process(process, STOP_GRACE)


def _stop_with_children(process: subprocess.Popen[bytes]) -> None:
    # The Dramatiq main process passes SIGTERM on to its worker processes
    # and waits for them. If it has to be killed, they would outlive it, so
    # any still running are killed by their own PIDs.
    children = {pid: _start_time(pid) for pid in child_pids(process.pid)}
    stop_process(process, STOP_GRACE)
    for pid, started in children.items():
        # A matching start time shows that the PID still belongs to the
        # child and not to a new process that reused it.
        if started is not None and _start_time(pid) == started:
            os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> int | None:
    """Return the start time of ``pid`` in clock ticks after boot, None when it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # Field 22 of /proc/PID/stat (proc(5)); the fields after the command
    # name in parentheses start at field 3.
    return int(stat.rpartition(")")[2].split()[19])
