from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.supervisor.processes import DEADLINE, ChildFiles, process_reaped, wait_until
from z4j_brain_plugin.errors import ConfigurationError
from z4j_brain_plugin.supervisor import ChildSupervisor, SupervisorPolicy, SupervisorState

pytestmark = pytest.mark.anyio

FAST_RESTARTS = SupervisorPolicy(
    initial_backoff=0.05, max_backoff=0.2, max_crashes=5, crash_window=60.0, stop_grace=10.0
)


async def wait_until_ready(supervisor: ChildSupervisor, files: ChildFiles) -> int:
    """Wait until the supervised child has installed its handlers, and return its pid."""
    await wait_until(
        lambda: supervisor.pid is not None and files.ready_pid() == supervisor.pid,
        "the supervised child has written its ready file",
    )
    assert supervisor.pid is not None
    return supervisor.pid


async def test_supervisor_restarts_killed_child(
    child_files: ChildFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="z4j_brain_plugin.supervisor")
    supervisor = ChildSupervisor(
        child_files.child_argv("--guard", "pdeathsig"), policy=FAST_RESTARTS
    )

    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        first_pid = await wait_until_ready(supervisor, child_files)
        os.kill(first_pid, signal.SIGKILL)
        await wait_until(
            lambda: supervisor.restarts == 1 and supervisor.state == SupervisorState.RUNNING,
            "the supervisor has restarted the child",
        )
        second_pid = await wait_until_ready(supervisor, child_files)
        group.cancel_scope.cancel()

    assert second_pid != first_pid
    assert supervisor.crashes == 1
    assert supervisor.restarts == 1
    assert child_files.spawned_pids() == [first_pid, second_pid]
    assert process_reaped(first_pid)
    assert process_reaped(second_pid)
    assert child_files.events() == ["graceful"]
    warnings = [
        record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
    ]
    assert any("signal SIGKILL" in message and "restarting in" in message for message in warnings)
    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert any(f"pid {first_pid} exited with signal SIGKILL" in message for message in infos)
    assert any("restarting scheduler child (restart 1)" in message for message in infos)


async def test_supervisor_reports_running_child(child_files: ChildFiles) -> None:
    supervisor = ChildSupervisor(
        child_files.child_argv(), env={**os.environ, "Z4J_TEST_MARKER": "from-env"}
    )

    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        pid = await wait_until_ready(supervisor, child_files)
        snapshot = supervisor.snapshot()
        text = repr(supervisor)
        group.cancel_scope.cancel()

    assert snapshot == {
        "state": "running",
        "pid": pid,
        "restarts": 0,
        "crashes_in_window": 0,
        "last_exit_code": None,
    }
    assert text == f"<ChildSupervisor scheduler state=running pid={pid} restarts=0>"
    ready = child_files.ready_state()
    assert ready is not None
    assert ready["ppid"] == os.getpid()
    assert ready["parent_pid_env"] == str(os.getpid())
    assert ready["marker_env"] == "from-env"


async def test_supervisor_gives_up_on_repeated_crashes(
    child_files: ChildFiles, caplog: pytest.LogCaptureFixture
) -> None:
    policy = SupervisorPolicy(
        initial_backoff=0.05, max_backoff=0.2, max_crashes=3, crash_window=60.0
    )
    supervisor = ChildSupervisor(child_files.child_argv("--exit-code", "1"), policy=policy)

    # run() returns by itself after giving up, so the task group closes.
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)

    assert supervisor.state == SupervisorState.GAVE_UP
    assert supervisor.gave_up
    assert supervisor.crashes == 3
    assert supervisor.restarts == 2
    assert supervisor.last_exit_code == 1
    assert supervisor.pid is None
    assert len(child_files.spawned_pids()) == 3
    snapshot = supervisor.snapshot()
    assert snapshot["state"] == "gave_up"
    assert snapshot["crashes_in_window"] == 3
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    gave_up = [message for message in errors if "giving up" in message]
    assert any("exited unexpectedly 3 times" in message for message in gave_up)


async def test_supervisor_gave_up_stop_keeps_state(child_files: ChildFiles) -> None:
    policy = SupervisorPolicy(initial_backoff=0.05, max_backoff=0.05, max_crashes=1)
    supervisor = ChildSupervisor(child_files.child_argv("--exit-code", "3"), policy=policy)

    with anyio.fail_after(DEADLINE):
        await supervisor.run()
        await supervisor.stop()

    assert supervisor.state == SupervisorState.GAVE_UP
    assert supervisor.last_exit_code == 3
    assert len(child_files.spawned_pids()) == 1


async def test_supervisor_counts_exit_zero_as_crash(
    child_files: ChildFiles, caplog: pytest.LogCaptureFixture
) -> None:
    # Crashes are at least one backoff (0.05 s) apart, so a 0.02 s window
    # never contains two of them and the supervisor keeps restarting.
    policy = SupervisorPolicy(
        initial_backoff=0.05, max_backoff=0.05, max_crashes=2, crash_window=0.02
    )
    supervisor = ChildSupervisor(child_files.child_argv("--exit-code", "0"), policy=policy)

    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        await wait_until(
            lambda: len(child_files.spawned_pids()) >= 4, "the child has been spawned 4 times"
        )
        await wait_until(lambda: supervisor.crashes >= 3, "the supervisor has counted 3 crashes")
        group.cancel_scope.cancel()

    assert not supervisor.gave_up
    assert supervisor.state == SupervisorState.STOPPED
    crash_warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "exited unexpectedly" in record.getMessage()
    ]
    assert len(crash_warnings) >= 3
    assert all("exit status code 0" in message for message in crash_warnings)
    for pid in child_files.spawned_pids():
        assert process_reaped(pid)


async def test_cancel_stops_child_gracefully(child_files: ChildFiles) -> None:
    supervisor = ChildSupervisor(child_files.child_argv(), policy=FAST_RESTARTS)

    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        pid = await wait_until_ready(supervisor, child_files)
        group.cancel_scope.cancel()

    assert child_files.events() == ["graceful"]
    assert supervisor.last_exit_code == 0
    assert supervisor.state == SupervisorState.STOPPED
    assert supervisor.pid is None
    assert supervisor.crashes == 0
    assert process_reaped(pid)


async def test_cancel_kills_child_ignoring_sigterm(
    child_files: ChildFiles, caplog: pytest.LogCaptureFixture
) -> None:
    policy = SupervisorPolicy(stop_grace=1.0)
    supervisor = ChildSupervisor(child_files.child_argv("--ignore-term"), policy=policy)

    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        pid = await wait_until_ready(supervisor, child_files)
        group.cancel_scope.cancel()

    assert child_files.events() == ["term-ignored"]
    assert supervisor.last_exit_code == -signal.SIGKILL
    assert supervisor.state == SupervisorState.STOPPED
    assert process_reaped(pid)
    warnings = [
        record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
    ]
    assert any(f"pid {pid} still running" in message for message in warnings)


async def test_stop_is_graceful_and_idempotent(child_files: ChildFiles) -> None:
    supervisor = ChildSupervisor(child_files.child_argv(), policy=FAST_RESTARTS)

    # No cancellation here: the task group closes only because run() returns.
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            pid = await wait_until_ready(supervisor, child_files)
            await supervisor.stop()
            state_after_stop = supervisor.state
            await supervisor.stop()

    assert state_after_stop == SupervisorState.STOPPED
    assert supervisor.state == SupervisorState.STOPPED
    assert child_files.events() == ["graceful"]
    assert supervisor.crashes == 0
    assert process_reaped(pid)


async def test_stop_interrupts_backoff(child_files: ChildFiles) -> None:
    policy = SupervisorPolicy(initial_backoff=600.0, max_backoff=600.0)
    supervisor = ChildSupervisor(child_files.child_argv("--exit-code", "1"), policy=policy)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            await wait_until(
                lambda: supervisor.state == SupervisorState.BACKOFF,
                "the supervisor waits to restart",
            )
            await supervisor.stop()

    assert supervisor.state == SupervisorState.STOPPED
    assert supervisor.crashes == 1
    assert supervisor.restarts == 0
    assert len(child_files.spawned_pids()) == 1


async def test_stop_before_run_spawns_nothing(child_files: ChildFiles) -> None:
    supervisor = ChildSupervisor(child_files.child_argv())

    await supervisor.stop()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)

    assert supervisor.state == SupervisorState.STOPPED
    assert child_files.spawned_pids() == []


async def test_run_twice_raises(child_files: ChildFiles) -> None:
    supervisor = ChildSupervisor(child_files.child_argv())
    async with anyio.create_task_group() as group:
        await group.start(supervisor.run)
        await wait_until_ready(supervisor, child_files)
        group.cancel_scope.cancel()

    with pytest.raises(RuntimeError, match="has already run"):
        await supervisor.run()


async def test_missing_program_raises_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-program"
    supervisor = ChildSupervisor([str(missing), "serve"])

    with pytest.raises(ConfigurationError, match="no-such-program") as raised:
        await supervisor.run()

    assert isinstance(raised.value.__cause__, FileNotFoundError)
    assert supervisor.state == SupervisorState.STOPPED
    assert supervisor.pid is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_backoff", 0.0),
        ("initial_backoff", -1.0),
        ("initial_backoff", math.nan),
        ("max_backoff", 0.1),
        ("max_backoff", math.inf),
        ("max_crashes", 0),
        ("crash_window", 0.0),
        ("crash_window", math.inf),
        ("stop_grace", -1.0),
        ("stop_grace", math.nan),
        ("backoff_jitter", 1.5),
        ("backoff_jitter", -0.1),
    ],
)
def test_policy_rejects_invalid_value(field: str, value: float) -> None:
    overrides: dict[str, Any] = {field: value}
    with pytest.raises(ConfigurationError) as raised:
        SupervisorPolicy(**overrides)

    message = str(raised.value)
    assert f"SupervisorPolicy.{field}" in message
    assert repr(value) in message


@pytest.mark.parametrize("argv", [[], (), "python -m z4j_scheduler serve"])
def test_supervisor_rejects_invalid_argv(argv: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="invalid argv"):
        ChildSupervisor(argv)


def test_supervisor_rejects_pipe_output() -> None:
    with pytest.raises(ConfigurationError, match=r"subprocess\.PIPE"):
        ChildSupervisor(["true"], stdout=subprocess.PIPE)
