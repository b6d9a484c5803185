from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from tests.supervisor.processes import (
    BRAIN_PROGRAM,
    DEADLINE,
    PARENT_PROGRAM,
    ChildFiles,
    process_gone,
    wait_until_blocking,
)
from z4j_scheduler.parent_guard import (
    PARENT_PID_ENV,
    install_parent_death_signal,
    parent_pid_from_environment,
    watch_parent,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG exists only on Linux"
)


@pytest.fixture
def started_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Collect the processes a test starts, then kill and reap those still running."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=DEADLINE)


def start(
    argv: list[str], processes: list[subprocess.Popen[bytes]], *, parent_pid: str | None
) -> subprocess.Popen[bytes]:
    environment = {key: value for key, value in os.environ.items() if key != PARENT_PID_ENV}
    if parent_pid is not None:
        environment[PARENT_PID_ENV] = parent_pid
    process = subprocess.Popen(argv, env=environment, stdin=subprocess.DEVNULL)
    processes.append(process)
    return process


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, None), ({PARENT_PID_ENV: ""}, None), ({PARENT_PID_ENV: "4321"}, 4321)],
)
def test_parent_pid_from_environment(environ: dict[str, str], expected: int | None) -> None:
    assert parent_pid_from_environment(environ) == expected


@pytest.mark.parametrize("raw", ["abc", "12.5", "0", "-7"])
def test_parent_pid_from_environment_rejects_invalid(raw: str) -> None:
    with pytest.raises(ValueError, match=PARENT_PID_ENV) as raised:
        parent_pid_from_environment({PARENT_PID_ENV: raw})

    assert repr(raw) in str(raised.value)


@pytest.mark.parametrize("sig", [0, -1, 100_000])
def test_install_rejects_invalid_signal(sig: int) -> None:
    with pytest.raises(ValueError, match=f"invalid sig {sig}"):
        install_parent_death_signal(sig)


@pytest.mark.anyio
async def test_watch_parent_returns_when_parent_differs() -> None:
    # This process's own pid is never its parent's pid.
    with anyio.fail_after(DEADLINE):
        await watch_parent(os.getpid(), interval=0.01)


@pytest.mark.anyio
@pytest.mark.parametrize("interval", [0.0, -1.0, math.nan])
async def test_watch_parent_rejects_invalid_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="invalid interval"):
        await watch_parent(os.getppid(), interval=interval)


@linux_only
def test_install_under_expected_parent_keeps_running(
    child_files: ChildFiles, started_processes: list[subprocess.Popen[bytes]]
) -> None:
    argv = child_files.child_argv("--guard", "pdeathsig")
    child = start(argv, started_processes, parent_pid=str(os.getpid()))

    wait_until_blocking(lambda: child_files.ready_state() is not None, "the child is ready")
    ready = child_files.ready_state()
    assert ready is not None
    assert ready["guard_installed"] is True
    assert child.poll() is None
    assert child_files.events() == []

    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=DEADLINE) == 0
    assert child_files.events() == ["graceful"]


@linux_only
def test_install_signals_self_when_parent_already_gone(
    child_files: ChildFiles, started_processes: list[subprocess.Popen[bytes]]
) -> None:
    # The child's parent is this process, so any other pid plays a parent that
    # died before the child installed the guard.
    argv = child_files.child_argv("--guard", "pdeathsig")
    child = start(argv, started_processes, parent_pid=str(os.getppid()))

    assert child.wait(timeout=DEADLINE) == 0
    assert child_files.events() == ["graceful"]
    assert child_files.ready_state() is None


@pytest.mark.parametrize(
    ("guard", "allowed_events"),
    [
        pytest.param("pdeathsig", {"graceful"}, marks=linux_only),
        ("watch", {"parent-gone"}),
        # Either guard may act first, and the other may still record its event.
        pytest.param("both", {"graceful", "parent-gone"}, marks=linux_only),
    ],
)
def test_child_exits_when_parent_killed(
    guard: str,
    allowed_events: set[str],
    child_files: ChildFiles,
    started_processes: list[subprocess.Popen[bytes]],
) -> None:
    argv = [sys.executable, str(PARENT_PROGRAM), *child_files.child_argv("--guard", guard)[2:]]
    parent = start(argv, started_processes, parent_pid=None)

    wait_until_blocking(lambda: child_files.ready_state() is not None, "the child is ready")
    ready = child_files.ready_state()
    assert ready is not None
    child_pid = int(ready["pid"])
    child_files.extra_pids.append(child_pid)
    assert ready["ppid"] == parent.pid
    assert ready["parent_pid_env"] == str(parent.pid)

    parent.kill()
    assert parent.wait(timeout=DEADLINE) == -signal.SIGKILL

    wait_until_blocking(lambda: process_gone(child_pid), "the orphaned child has exited")
    events = child_files.events()
    assert events
    assert set(events) <= allowed_events
    assert len(events) == len(set(events))


@linux_only
def test_supervised_child_exits_when_brain_killed(
    child_files: ChildFiles, started_processes: list[subprocess.Popen[bytes]]
) -> None:
    argv = [sys.executable, str(BRAIN_PROGRAM), *child_files.child_argv("--guard", "pdeathsig")]
    brain = start(argv, started_processes, parent_pid=None)

    wait_until_blocking(lambda: child_files.ready_state() is not None, "the child is ready")
    ready = child_files.ready_state()
    assert ready is not None
    child_pid = int(ready["pid"])
    child_files.extra_pids.append(child_pid)
    assert ready["ppid"] == brain.pid
    assert ready["guard_installed"] is True

    brain.kill()
    assert brain.wait(timeout=DEADLINE) == -signal.SIGKILL

    wait_until_blocking(lambda: process_gone(child_pid), "the orphaned child has exited")
    assert child_files.events() == ["graceful"]
    assert child_files.spawned_pids() == [child_pid]
