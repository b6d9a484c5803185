"""Process helpers shared by the supervisor and parent-guard tests."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

CHILD_PROGRAM = Path(__file__).with_name("child_program.py")
PARENT_PROGRAM = Path(__file__).with_name("parent_program.py")
BRAIN_PROGRAM = Path(__file__).with_name("brain_program.py")
TEST_PROGRAMS = (CHILD_PROGRAM.name, PARENT_PROGRAM.name, BRAIN_PROGRAM.name)

# Generous, because a busy 2-core machine can take seconds to start Python.
DEADLINE = 20.0
POLL_INTERVAL = 0.02


@dataclass
class ChildFiles:
    """Files through which a test reads what its child programs did."""

    directory: Path
    extra_pids: list[int] = field(default_factory=list)

    @property
    def ready_file(self) -> Path:
        return self.directory / "ready.json"

    @property
    def event_file(self) -> Path:
        return self.directory / "events.txt"

    @property
    def spawn_log(self) -> Path:
        return self.directory / "spawns.txt"

    def child_argv(self, *options: str) -> list[str]:
        """Return the command that runs the child program with these files."""
        return [
            sys.executable,
            str(CHILD_PROGRAM),
            "--ready-file",
            str(self.ready_file),
            "--event-file",
            str(self.event_file),
            "--spawn-log",
            str(self.spawn_log),
            *options,
        ]

    def ready_state(self) -> dict[str, Any] | None:
        if not self.ready_file.exists():
            return None
        state: dict[str, Any] = json.loads(self.ready_file.read_text(encoding="utf-8"))
        return state

    def ready_pid(self) -> int | None:
        state = self.ready_state()
        return None if state is None else int(state["pid"])

    def events(self) -> list[str]:
        return _read_lines(self.event_file)

    def spawned_pids(self) -> list[int]:
        return [int(line) for line in _read_lines(self.spawn_log)]

    def kill_leftovers(self) -> None:
        """SIGKILL every test program this test started that is still running."""
        ready = self.ready_pid()
        candidates = {*self.spawned_pids(), *self.extra_pids}
        if ready is not None:
            candidates.add(ready)
        for pid in candidates:
            kill_if_test_program(pid)


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines()


def process_gone(pid: int) -> bool:
    """Return whether ``pid`` has exited, counting a zombie that awaits its reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return _process_state(pid) in (None, "Z")


def process_reaped(pid: int) -> bool:
    """Return whether ``pid`` no longer exists at all, zombie included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    # The command name in brackets may contain spaces, so split after it.
    return stat.rsplit(")", 1)[1].split()[0]


def kill_if_test_program(pid: int) -> None:
    """SIGKILL ``pid`` if it is one of the test programs and still running.

    The command line check keeps a reused pid of an unrelated process safe.
    """
    if process_gone(pid):
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    if any(name.encode() in command for name in TEST_PROGRAMS):
        os.kill(pid, signal.SIGKILL)


def wait_until_blocking(condition: Callable[[], bool], description: str) -> None:
    """Poll ``condition`` until it holds, failing after ``DEADLINE`` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE} s waiting until {description}")
        time.sleep(POLL_INTERVAL)


async def wait_until(condition: Callable[[], bool], description: str) -> None:
    """Poll ``condition`` in the event loop until it holds, failing after ``DEADLINE`` s."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE} s waiting until {description}")
        await anyio.sleep(POLL_INTERVAL)
