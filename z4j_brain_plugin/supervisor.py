"""Supervise the scheduler as a child process of the brain (embedded mode).

The brain starts ``ChildSupervisor.run`` in its ASGI lifespan task group. The
supervisor spawns the command, restarts it with exponential backoff when it
exits, gives up after too many crashes in a short window, and stops it with
SIGTERM, then SIGKILL, when the task group is cancelled at shutdown.

Choices a caller relies on:

- Any exit that the supervisor did not request counts as a crash, exit code 0
  included. The scheduler runs until the brain stops it, so a scheduler that
  exits on its own has failed, and a child that keeps exiting 0 still trips
  the give-up limit instead of restarting forever.
- After giving up, ``run()`` returns normally, so the web service stays up and
  ``snapshot()`` reports the state ``gave_up`` to the readiness probe.
- The child stays in the brain's session and process group. A signal sent to
  the group (a terminal Ctrl-C, or an init that forwards signals to the group)
  reaches both, so the child command must handle SIGINT and SIGTERM by
  shutting down gracefully. If such an exit arrives before the brain's own
  shutdown cancels the supervisor, it is logged as a crash and the restarted
  child is then stopped with the rest of the service.
- The child is spawned from the event loop thread. Linux sends the
  parent-death signal (see ``z4j_scheduler.parent_guard``) when that thread
  exits. Under uvicorn it is the main thread, so the signal comes only when
  the brain process exits. ``Z4J_PARENT_PID`` in the child's environment is
  set to the brain's pid.
- The child inherits stdout and stderr, so its logs appear in the container
  log, and its stdin is /dev/null.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import random
import shlex
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc

from z4j_brain_plugin.backoff import backoff_delay, crash_limit_reached, crashes_within_window
from z4j_brain_plugin.errors import ConfigurationError
from z4j_scheduler.parent_guard import PARENT_PID_ENV

logger = logging.getLogger(__name__)

# Seconds to wait for the exit status after SIGKILL. The kernel ends a killed
# process at once unless it is stuck in uninterruptible sleep, so reaching
# this limit means the process cannot be reaped now.
_KILL_REAP_TIMEOUT = 5.0


class SupervisorState(enum.StrEnum):
    """Lifecycle state of a supervised child, as reported by ``snapshot()``."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    GAVE_UP = "gave_up"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SupervisorPolicy:
    """Restart and stop limits, all durations in seconds.

    ``max_crashes`` crashes within ``crash_window`` make the supervisor give
    up. A child that stayed up for ``crash_window`` seconds counts as healthy,
    so the next restart waits ``initial_backoff`` again. ``backoff_jitter``
    shortens each delay by a random fraction of up to that value, which
    spreads restarts of many brains that crashed together.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_crashes: int = 5
    crash_window: float = 60.0
    stop_grace: float = 10.0
    backoff_jitter: float = 0.0

    def __post_init__(self) -> None:
        _require_positive("initial_backoff", self.initial_backoff)
        _require_positive("crash_window", self.crash_window)
        if not (math.isfinite(self.max_backoff) and self.max_backoff >= self.initial_backoff):
            raise ConfigurationError(
                f"invalid SupervisorPolicy.max_backoff {self.max_backoff!r}: use a finite "
                f"number of seconds of at least initial_backoff ({self.initial_backoff!r})"
            )
        if self.max_crashes < 1:
            raise ConfigurationError(
                f"invalid SupervisorPolicy.max_crashes {self.max_crashes!r}: use 1 or more"
            )
        if not (math.isfinite(self.stop_grace) and self.stop_grace >= 0):
            raise ConfigurationError(
                f"invalid SupervisorPolicy.stop_grace {self.stop_grace!r}: "
                "use a finite number of seconds, 0 or more"
            )
        if not 0.0 <= self.backoff_jitter <= 1.0:
            raise ConfigurationError(
                f"invalid SupervisorPolicy.backoff_jitter {self.backoff_jitter!r}: "
                "use a fraction from 0 to 1"
            )


def _require_positive(field: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"invalid SupervisorPolicy.{field} {value!r}: use a finite number of seconds above 0"
        )


class ChildSupervisor:
    """Spawn one child process, restart it when it crashes, and stop it at shutdown.

    Start it with ``await task_group.start(supervisor.run)``. Each instance
    runs once. ``env`` replaces the brain's environment for the child, as in
    ``subprocess``, and defaults to the brain's own. ``stdout`` and
    ``stderr`` accept a file or ``subprocess.DEVNULL`` and default to the
    brain's streams.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        policy: SupervisorPolicy = SupervisorPolicy(),
        name: str = "scheduler",
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        if isinstance(argv, str) or not argv:
            raise ConfigurationError(
                f"invalid argv {argv!r}: give the command as a non-empty list of arguments"
            )
        if subprocess.PIPE in (stdout, stderr):
            raise ConfigurationError(
                "invalid stdout or stderr subprocess.PIPE: nothing reads the pipe, so the "
                "child would block once it fills; use None, a file or subprocess.DEVNULL"
            )
        self._argv = tuple(argv)
        self._env = None if env is None else dict(env)
        self._cwd = cwd
        self._policy = policy
        self._name = name
        self._stdout = stdout
        self._stderr = stderr
        self._random = random.Random()

        self._state = SupervisorState.STOPPED
        self._process: anyio.abc.Process | None = None
        self._spawned_at = 0.0
        self._crash_times: deque[float] = deque(maxlen=policy.max_crashes)
        self._crashes = 0
        self._consecutive_crashes = 0
        self._restarts = 0
        self._last_exit_code: int | None = None
        self._gave_up = False

        self._run_called = False
        self._stop_requested = False
        self._run_scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None

    @property
    def state(self) -> SupervisorState:
        """Current lifecycle state. It is ``stopped`` before ``run()`` starts."""
        return self._state

    @property
    def pid(self) -> int | None:
        """Pid of the running child, or None while no child is running."""
        return None if self._process is None else self._process.pid

    @property
    def crashes(self) -> int:
        """Total number of unexpected exits since ``run()`` started."""
        return self._crashes

    @property
    def restarts(self) -> int:
        """Number of spawns after the first one."""
        return self._restarts

    @property
    def last_exit_code(self) -> int | None:
        """Exit status of the last child, negative for a signal (-9 is SIGKILL)."""
        return self._last_exit_code

    @property
    def gave_up(self) -> bool:
        """Whether the crash limit was reached and restarts have stopped."""
        return self._gave_up

    def snapshot(self) -> dict[str, str | int | None]:
        """Return the state for a readiness probe, as JSON-ready values."""
        in_window = crashes_within_window(
            self._crash_times, now=time.monotonic(), window=self._policy.crash_window
        )
        return {
            "state": str(self._state),
            "pid": self.pid,
            "restarts": self._restarts,
            "crashes_in_window": in_window,
            "last_exit_code": self._last_exit_code,
        }

    def __repr__(self) -> str:
        return (
            f"<ChildSupervisor {self._name} state={self._state} "
            f"pid={self.pid} restarts={self._restarts}>"
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Spawn the child and keep it running until stopped, cancelled or given up.

        Calls ``task_status.started()`` once the first child is spawned.
        Raises ConfigurationError when the first spawn fails, because the
        command cannot be run at all. Returns normally after ``stop()`` or
        after giving up. On cancellation it stops the child before
        re-raising, and that cleanup is shielded from the cancellation.
        """
        if self._run_called:
            raise RuntimeError(
                f"{self!r} has already run; create a new ChildSupervisor for each run"
            )
        self._run_called = True
        self._finished = anyio.Event()
        if self._stop_requested:
            task_status.started()
            self._finished.set()
            return
        try:
            with anyio.CancelScope() as scope:
                self._run_scope = scope
                await self._supervise(task_status)
        finally:
            await self._stop_child()
            self._finished.set()

    async def stop(self) -> None:
        """Stop the child gracefully and wait until ``run()`` has returned.

        Sends SIGTERM, then SIGKILL after ``policy.stop_grace`` seconds, like a
        cancellation. Calling it again, before ``run()`` or after it returned,
        does nothing more.
        """
        self._stop_requested = True
        if self._run_scope is not None:
            self._run_scope.cancel()
        if self._finished is not None:
            await self._finished.wait()

    async def _supervise(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await self._spawn()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot start the {self._name} child {shlex.join(self._argv)!r}: {exc}; "
                "check that the command exists and is executable"
            ) from exc
        task_status.started()
        while True:
            await self._wait_for_exit()
            if self._record_crash():
                self._give_up()
                return
            await self._sleep_backoff()
            await self._restart()

    async def _spawn(self) -> None:
        self._state = SupervisorState.STARTING
        process = await anyio.open_process(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            cwd=self._cwd,
            env=self._child_environment(),
        )
        self._process = process
        self._spawned_at = time.monotonic()
        self._state = SupervisorState.RUNNING
        logger.info("started %s child pid %d: %s", self._name, process.pid, shlex.join(self._argv))

    def _child_environment(self) -> dict[str, str]:
        environment = dict(os.environ if self._env is None else self._env)
        environment[PARENT_PID_ENV] = str(os.getpid())
        return environment

    async def _restart(self) -> None:
        self._restarts += 1
        logger.info("restarting %s child (restart %d)", self._name, self._restarts)
        try:
            await self._spawn()
        except OSError as exc:
            # No child is running now, so the next _wait_for_exit returns at
            # once and the failed spawn counts as a crash.
            logger.warning("restart %d of %s child failed: %s", self._restarts, self._name, exc)

    async def _wait_for_exit(self) -> None:
        process = self._process
        if process is None:
            self._last_exit_code = None
            return
        exit_code = await process.wait()
        self._process = None
        self._last_exit_code = exit_code
        _log_exit(self._name, process.pid, exit_code)
        if time.monotonic() - self._spawned_at >= self._policy.crash_window:
            self._consecutive_crashes = 0

    def _record_crash(self) -> bool:
        self._crashes += 1
        self._consecutive_crashes += 1
        self._crash_times.append(time.monotonic())
        return crash_limit_reached(
            self._crash_times,
            max_crashes=self._policy.max_crashes,
            window=self._policy.crash_window,
        )

    async def _sleep_backoff(self) -> None:
        policy = self._policy
        delay = backoff_delay(
            self._consecutive_crashes,
            initial=policy.initial_backoff,
            maximum=policy.max_backoff,
            jitter=policy.backoff_jitter,
            random_unit=self._random.random(),
        )
        logger.warning(
            # Any exit the supervisor did not ask for counts, status 0 included.
            "%s child exited unexpectedly (exit status %s, %d in a row); restarting in %.2f s",
            self._name,
            _describe_status(self._last_exit_code),
            self._consecutive_crashes,
            delay,
        )
        self._state = SupervisorState.BACKOFF
        await anyio.sleep(delay)

    def _give_up(self) -> None:
        self._gave_up = True
        self._state = SupervisorState.GAVE_UP
        logger.error(
            "%s child exited unexpectedly %d times within %.1f s (last exit status %s); "
            "giving up and not restarting it. The service stays up and reports not ready; "
            "fix the cause in the child's log, then restart the service",
            self._name,
            self._policy.max_crashes,
            self._policy.crash_window,
            _describe_status(self._last_exit_code),
        )

    async def _stop_child(self) -> None:
        with anyio.CancelScope(shield=True):
            process = self._process
            if process is not None:
                self._state = SupervisorState.STOPPING
                await self._terminate(process)
                self._process = None
            if not self._gave_up:
                self._state = SupervisorState.STOPPED

    async def _terminate(self, process: anyio.abc.Process) -> None:
        grace = self._policy.stop_grace
        if process.returncode is None:
            logger.info(
                "stopping %s child pid %d with SIGTERM (grace %.1f s)",
                self._name,
                process.pid,
                grace,
            )
            _send_signal(process, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            logger.warning(
                "%s child pid %d still running %.1f s after SIGTERM; sending SIGKILL",
                self._name,
                process.pid,
                grace,
            )
            _send_signal(process, signal.SIGKILL)
            with anyio.move_on_after(_KILL_REAP_TIMEOUT):
                await process.wait()
        if process.returncode is None:
            logger.error(
                "%s child pid %d did not exit within %.1f s of SIGKILL and is left unreaped",
                self._name,
                process.pid,
                _KILL_REAP_TIMEOUT,
            )
            return
        self._last_exit_code = process.returncode
        _log_exit(self._name, process.pid, process.returncode)


def _send_signal(process: anyio.abc.Process, sig: signal.Signals) -> None:
    # ProcessLookupError means the child exited and was reaped after the
    # returncode check, so there is nothing left to signal.
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


def _log_exit(name: str, pid: int, exit_code: int) -> None:
    logger.info("%s child pid %d exited with %s", name, pid, _describe_status(exit_code))


def _describe_status(exit_code: int | None) -> str:
    if exit_code is None:
        return "none (spawn failed)"
    if exit_code >= 0:
        return f"code {exit_code}"
    try:
        return f"signal {signal.Signals(-exit_code).name}"
    except ValueError:
        return f"signal {-exit_code}"
