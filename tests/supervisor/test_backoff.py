from __future__ import annotations

import math

import pytest

from z4j_brain_plugin.backoff import backoff_delay, crash_limit_reached, crashes_within_window


def test_backoff_doubles_from_initial() -> None:
    delays = [backoff_delay(n, initial=0.5, maximum=30.0) for n in range(1, 6)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_stops_at_maximum() -> None:
    assert backoff_delay(7, initial=0.5, maximum=30.0) == 30.0
    assert backoff_delay(8, initial=0.5, maximum=30.0) == 30.0


def test_backoff_huge_restart_count_stays_at_maximum() -> None:
    assert backoff_delay(10_000, initial=0.5, maximum=30.0) == 30.0
    assert backoff_delay(10_000, initial=1e300, maximum=1e301) == 1e301


def test_backoff_initial_equal_to_maximum_is_constant() -> None:
    delays = {backoff_delay(n, initial=2.0, maximum=2.0) for n in range(1, 10)}

    assert delays == {2.0}


@pytest.mark.parametrize(
    ("jitter", "random_unit", "expected"),
    [
        (0.0, 0.9, 4.0),
        (0.5, 0.0, 4.0),
        (0.5, 0.5, 3.0),
        (1.0, 0.75, 1.0),
    ],
)
def test_backoff_jitter_shortens_delay(jitter: float, random_unit: float, expected: float) -> None:
    delay = backoff_delay(3, initial=1.0, maximum=30.0, jitter=jitter, random_unit=random_unit)

    assert math.isclose(delay, expected)


def test_backoff_jitter_never_exceeds_maximum() -> None:
    for restart in range(1, 20):
        delay = backoff_delay(restart, initial=0.5, maximum=30.0, jitter=1.0, random_unit=0.999)
        assert 0.0 < delay <= 30.0


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"restart": 0}, "restart"),
        ({"restart": -1}, "restart"),
        ({"initial": 0.0}, "initial"),
        ({"initial": -1.0}, "initial"),
        ({"initial": math.nan}, "initial"),
        ({"initial": math.inf, "maximum": math.inf}, "initial"),
        ({"maximum": 0.1}, "maximum"),
        ({"maximum": math.inf}, "maximum"),
        ({"maximum": math.nan}, "maximum"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
        ({"random_unit": 1.0}, "random_unit"),
        ({"random_unit": -0.5}, "random_unit"),
    ],
)
def test_backoff_rejects_invalid_argument(arguments: dict[str, float], name: str) -> None:
    values: dict[str, float] = {"restart": 1, "initial": 0.5, "maximum": 30.0, "jitter": 0.5}
    values.update(arguments)
    restart = int(values.pop("restart"))

    with pytest.raises(ValueError, match=rf"invalid {name} "):
        backoff_delay(restart, **values)


def test_crash_limit_reached_within_window() -> None:
    assert crash_limit_reached([10.0, 20.0, 30.0], max_crashes=3, window=60.0)


def test_crash_limit_needs_max_crashes() -> None:
    assert not crash_limit_reached([10.0, 20.0], max_crashes=3, window=60.0)
    assert not crash_limit_reached([], max_crashes=1, window=60.0)


def test_crash_limit_single_crash_with_limit_one() -> None:
    assert crash_limit_reached([5.0], max_crashes=1, window=0.0)


def test_crash_limit_window_boundary_is_inclusive() -> None:
    assert crash_limit_reached([0.0, 30.0, 60.0], max_crashes=3, window=60.0)
    assert not crash_limit_reached([0.0, 30.0, 60.5], max_crashes=3, window=60.0)


def test_crash_limit_spread_out_crashes_do_not_count() -> None:
    crash_times = [0.0, 40.0, 80.0, 120.0, 160.0]

    assert not crash_limit_reached(crash_times, max_crashes=3, window=60.0)
    assert crash_limit_reached(crash_times, max_crashes=2, window=60.0)


def test_crash_limit_finds_dense_run_in_middle() -> None:
    crash_times = [0.0, 100.0, 101.0, 102.0, 500.0]

    assert crash_limit_reached(crash_times, max_crashes=3, window=5.0)


def test_crash_limit_accepts_unsorted_instants() -> None:
    assert crash_limit_reached([102.0, 0.0, 101.0, 100.0], max_crashes=3, window=5.0)


@pytest.mark.parametrize(
    ("max_crashes", "window", "name"),
    [(0, 60.0, "max_crashes"), (3, -1.0, "window"), (3, math.nan, "window")],
)
def test_crash_limit_rejects_invalid_argument(max_crashes: int, window: float, name: str) -> None:
    with pytest.raises(ValueError, match=rf"invalid {name} "):
        crash_limit_reached([1.0], max_crashes=max_crashes, window=window)


def test_crashes_within_window_counts_recent_only() -> None:
    crash_times = [10.0, 50.0, 95.0, 100.0]

    assert crashes_within_window(crash_times, now=100.0, window=50.0) == 3
    assert crashes_within_window(crash_times, now=100.0, window=4.0) == 1
    assert crashes_within_window(crash_times, now=200.0, window=50.0) == 0


def test_crashes_within_window_ignores_future_instants() -> None:
    assert crashes_within_window([10.0, 120.0], now=100.0, window=100.0) == 1


def test_backoff_tiny_initial_still_reaches_maximum() -> None:
    assert backoff_delay(5_000, initial=5e-324, maximum=1e10) == 1e10
