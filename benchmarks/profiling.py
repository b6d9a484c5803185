"""Sample the brain and scheduler with py-spy while a scenario runs (``--profile DIR``)."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

# Samples per second; py-spy's default of 100 misses the short storm phases.
RATE = 250


@contextmanager
def sampled(pids: Mapping[str, int], directory: Path | None, label: str) -> Iterator[None]:
    """Record a speedscope profile of each named PID into ``directory`` while the block runs.

    Does nothing when ``directory`` is None. When py-spy is missing or cannot
    attach (it needs ptrace permission), the block runs unprofiled and the
    reason is logged.
    """
    if directory is None:
        yield
        return
    executable = _py_spy()
    if executable is None:
        logger.warning(
            "py-spy is not installed; %s runs without a profile (pip install py-spy)", label
        )
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    samplers = [
        _start(executable, pid, directory / f"{label}-{name}.speedscope.json")
        for name, pid in pids.items()
    ]
    try:
        yield
    finally:
        for sampler in samplers:
            _stop(sampler)


def _py_spy() -> str | None:
    # The virtualenv's bin directory is often not on PATH when its python is run directly.
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _start(executable: str, pid: int, output: Path) -> subprocess.Popen[bytes]:
    command = [
        executable,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE),
        "--format",
        "speedscope",
        "--output",
        str(output),
        "--nonblocking",
    ]
    logger.info("profiling pid %d into %s", pid, output)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(sampler: subprocess.Popen[bytes]) -> None:
    # py-spy writes its output file when interrupted.
    sampler.send_signal(signal.SIGINT)
    try:
        _, stderr = sampler.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        sampler.kill()
        _, stderr = sampler.communicate()
    if sampler.returncode not in (0, -signal.SIGINT):
        logger.warning(
            "py-spy exited with %s: %s", sampler.returncode, stderr.decode(errors="replace")[-500:]
        )
