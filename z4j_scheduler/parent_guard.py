"""Make the scheduler exit when the process that supervises it dies.

In embedded mode the brain spawns the scheduler as a child process and sets
``Z4J_PARENT_PID`` in the child's environment to the brain's own pid. If the
brain is killed without a chance to stop the child (SIGKILL, out-of-memory
kill), the child must not keep firing schedules as an orphan. Two guards cover
this:

- ``install_parent_death_signal`` requests that the Linux kernel send a signal to
  this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``). Install a
  SIGTERM handler first, so the scheduler shuts down gracefully.
- ``watch_parent`` polls ``os.getppid()`` and returns once the process has
  been re-parented. It works on every POSIX system and is the fallback where
  ``prctl`` is unavailable.

Both check the parent against the pid in ``Z4J_PARENT_PID``, which
``parent_pid_from_environment`` reads and ``watch_parent`` takes as an
argument. A process started without that variable is not supervised and
needs no guard. The supervisor's command must run the scheduler directly,
because a wrapper process that stays in between (a shell that does not exec
its command, for example) becomes the real parent, and the guards would then
shut the scheduler down at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping

import anyio

PARENT_PID_ENV = "Z4J_PARENT_PID"

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1

logger = logging.getLogger(__name__)


def parent_pid_from_environment(environ: Mapping[str, str] | None = None) -> int | None:
    """Return the expected parent pid from ``Z4J_PARENT_PID``, or None when unset.

    Raises ValueError when the variable is set but is not a positive integer.
    """
    source = os.environ if environ is None else environ
    raw = source.get(PARENT_PID_ENV)
    if raw is None or raw == "":
        return None
    try:
        pid = int(raw)
    except ValueError as exc:
        raise ValueError(
            f"invalid {PARENT_PID_ENV} {raw!r}: set it to the supervising process's pid "
            "or leave it unset"
        ) from exc
    if pid < 1:
        raise ValueError(f"invalid {PARENT_PID_ENV} {raw!r}: a pid is a positive integer")
    return pid


def install_parent_death_signal(
    sig: int = signal.SIGTERM, *, expected_ppid: int | None = None
) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    ``expected_ppid`` defaults to ``Z4J_PARENT_PID``. If the parent already
    died before the request took effect, ``os.getppid()`` no longer matches
    it, so this function sends ``sig`` to the process itself right away.
    Returns False, doing nothing, where ``prctl`` is unavailable (any system
    other than Linux). Raises ValueError for an invalid ``sig`` or
    ``Z4J_PARENT_PID``, and OSError when ``prctl`` fails.

    The kernel sends the signal when the thread that spawned this process
    exits, which for the brain is its event loop thread.
    """
    if sig not in signal.valid_signals():
        raise ValueError(f"invalid sig {sig!r}: use a signal number such as signal.SIGTERM")
    expected = parent_pid_from_environment() if expected_ppid is None else expected_ppid
    prctl = _load_prctl()
    if prctl is None:
        return False
    if prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG, {sig}) failed: {os.strerror(error)}")
    _signal_self_if_orphaned(sig, expected)
    return True


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        logger.warning("prctl is not available in this C library; parent-death signal not set")
        return None
    return prctl


def _signal_self_if_orphaned(sig: int, expected_ppid: int | None) -> None:
    if expected_ppid is None:
        return
    current = os.getppid()
    if current != expected_ppid:
        logger.warning(
            "parent pid %d already exited (parent is now pid %d); sending signal %s to self",
            expected_ppid,
            current,
            _signal_name(sig),
        )
        os.kill(os.getpid(), sig)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


async def watch_parent(expected_ppid: int, *, interval: float = 1.0) -> None:
    """Wait until this process's parent is no longer ``expected_ppid``, then return.

    Polls ``os.getppid()`` every ``interval`` seconds. A dead parent's
    children are re-parented to init or a subreaper, so a changed pid means
    the parent died. The caller shuts the scheduler down when this returns.
    """
    if not interval > 0:
        raise ValueError(f"invalid interval {interval!r}: use a number of seconds above 0")
    while os.getppid() == expected_ppid:
        await anyio.sleep(interval)
    logger.warning(
        "parent pid %d exited (parent is now pid %d); shutting down",
        expected_ppid,
        os.getppid(),
    )
