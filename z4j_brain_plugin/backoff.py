"""Restart backoff and crash-window arithmetic for the child-process supervisor.

Pure functions: every input, including the current time and any random value,
is passed in by the caller. Times are monotonic seconds and delays are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def backoff_delay(
    restart: int,
    *,
    initial: float,
    maximum: float,
    jitter: float = 0.0,
    random_unit: float = 0.0,
) -> float:
    """Return the delay in seconds before the ``restart``-th consecutive restart.

    The first restart waits ``initial``, and each further one doubles the
    delay up to ``maximum``. Jitter then shortens the delay by the fraction
    ``jitter * random_unit``, so the result never exceeds ``maximum``.
    ``random_unit`` is a value in [0, 1) drawn by the caller.
    """
    _check_backoff_arguments(restart, initial, maximum, jitter, random_unit)
    try:
        doubled = math.ldexp(initial, restart - 1)
    except OverflowError:
        # Past the float range, so far above any finite maximum.
        doubled = math.inf
    delay = min(maximum, doubled)
    return delay * (1.0 - jitter * random_unit)


def _check_backoff_arguments(
    restart: int, initial: float, maximum: float, jitter: float, random_unit: float
) -> None:
    if restart < 1:
        raise ValueError(f"invalid restart {restart!r}: restarts are counted from 1")
    if not (math.isfinite(initial) and initial > 0):
        raise ValueError(f"invalid initial {initial!r}: use a finite number of seconds above 0")
    if not (math.isfinite(maximum) and maximum >= initial):
        raise ValueError(
            f"invalid maximum {maximum!r}: use a finite number of seconds "
            f"of at least initial ({initial!r})"
        )
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"invalid jitter {jitter!r}: use a fraction from 0 to 1")
    if not 0.0 <= random_unit < 1.0:
        raise ValueError(f"invalid random_unit {random_unit!r}: use a value in [0, 1)")


def crash_limit_reached(crash_times: Sequence[float], *, max_crashes: int, window: float) -> bool:
    """Return whether ``max_crashes`` of the crashes fall within ``window`` seconds.

    ``crash_times`` are monotonic instants in any order. A span exactly equal
    to ``window`` counts as within it.
    """
    _check_window_arguments(max_crashes, window)
    ordered = sorted(crash_times)
    last_start = len(ordered) - max_crashes
    return any(
        ordered[start + max_crashes - 1] - ordered[start] <= window
        for start in range(last_start + 1)
    )


def crashes_within_window(crash_times: Sequence[float], *, now: float, window: float) -> int:
    """Count the crashes at most ``window`` seconds before ``now`` (and not after it)."""
    _check_window_arguments(1, window)
    return sum(1 for instant in crash_times if 0.0 <= now - instant <= window)


def _check_window_arguments(max_crashes: int, window: float) -> None:
    if max_crashes < 1:
        raise ValueError(f"invalid max_crashes {max_crashes!r}: use 1 or more")
    if not (math.isfinite(window) and window >= 0):
        raise ValueError(f"invalid window {window!r}: use a finite number of seconds, 0 or more")
