"""The schedule cases in tests/data/schedule_cases.json, through the API and the command.

Each case comes from a public bug report about a scheduler and states the
expected slots in UTC. ``next`` cases list slots after an instant;
``catch-up`` cases plan fires after an outage; ``impossible-*`` cases must be
rejected as never matching.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import (
    Schedule,
    format_instant,
    next_slots,
    parse_instant,
    parse_policy,
    parse_schedule,
    plan_catch_up,
)

CASES_PATH = Path(__file__).parent.parent / "data" / "schedule_cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_PATH.read_text(encoding="utf-8"))
NEXT_CASES = [case for case in CASES if case["command"] == "next"]
CATCH_UP_CASES = [case for case in CASES if case["command"] == "catch-up"]
COMMAND_TIMEOUT_SECONDS = 120
PARALLEL_COMMANDS = 4


def _is_impossible(case: dict[str, Any]) -> bool:
    return str(case["id"]).startswith("impossible-")


def _schedule_of(case: dict[str, Any]) -> Schedule:
    start_at = parse_instant(case["start_at"], "start_at") if "start_at" in case else None
    return parse_schedule(case["kind"], case["expression"], case["timezone"], start_at)


def _command_of(case: dict[str, Any]) -> list[str]:
    arguments = [
        sys.executable,
        "-m",
        "z4j_scheduler.cli",
        case["command"],
        "--json",
        "--kind",
        case["kind"],
        "--expression",
        case["expression"],
        "--timezone",
        case["timezone"],
    ]
    if "start_at" in case:
        arguments += ["--start-at", case["start_at"]]
    if case["command"] == "next":
        return [*arguments, "--after", case["after"], "--count", str(case["count"])]
    return [
        *arguments,
        "--policy",
        case["policy"],
        "--cursor",
        case["cursor"],
        "--now",
        case["now"],
        "--grace",
        str(case["grace_seconds"]),
    ]


@pytest.fixture(scope="module")
def command_results() -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every case through the command once, a few processes at a time."""

    def run(case: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _command_of(case),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=PARALLEL_COMMANDS) as pool:
        results = list(pool.map(run, CASES))
    return {case["id"]: result for case, result in zip(CASES, results, strict=True)}


def _assert_slots_equal(actual: list[str], case: dict[str, Any]) -> None:
    expected: list[str] = case["expected"]
    tolerance = case.get("tolerance_seconds")
    if tolerance is None:
        assert actual == expected
        return
    assert len(actual) == len(expected)
    for got, expected_slot in zip(actual, expected, strict=True):
        difference = parse_instant(got, "slot") - parse_instant(expected_slot, "slot")
        assert abs(difference) <= timedelta(seconds=tolerance), (got, expected_slot)


@pytest.mark.parametrize("case", NEXT_CASES, ids=[case["id"] for case in NEXT_CASES])
def test_next_case_through_api(case: dict[str, Any]) -> None:
    if _is_impossible(case):
        with pytest.raises(ScheduleError, match="never matches") as raised:
            _schedule_of(case)
        assert raised.value.field == "expression"
        return
    schedule = _schedule_of(case)

    slots = next_slots(schedule, parse_instant(case["after"], "after"), case["count"])

    _assert_slots_equal([format_instant(slot) for slot in slots], case)


@pytest.mark.parametrize("case", NEXT_CASES, ids=[case["id"] for case in NEXT_CASES])
def test_next_case_through_command(
    case: dict[str, Any], command_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = command_results[case["id"]]
    if _is_impossible(case):
        assert result.returncode == 2
        assert result.stdout == ""
        assert "never matches" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        return
    assert result.returncode == 0, result.stderr

    output = json.loads(result.stdout)

    assert list(output) == ["slots"]
    _assert_slots_equal(output["slots"], case)


def _plan_of(case: dict[str, Any]) -> tuple[list[str], int, datetime | None]:
    plan = plan_catch_up(
        _schedule_of(case),
        parse_instant(case["cursor"], "cursor"),
        parse_instant(case["now"], "now"),
        timedelta(seconds=case["grace_seconds"]),
        parse_policy(case["policy"]),
    )
    return [format_instant(fire.slot) for fire in plan.fires], plan.dropped, plan.cursor


@pytest.mark.parametrize("case", CATCH_UP_CASES, ids=[case["id"] for case in CATCH_UP_CASES])
def test_catch_up_case_through_api(case: dict[str, Any]) -> None:
    fires, dropped, cursor = _plan_of(case)

    assert fires == case["expected_fire"]
    assert dropped == case["expected_dropped"]
    now = parse_instant(case["now"], "now")
    assert cursor is None or cursor > now


@pytest.mark.parametrize("case", CATCH_UP_CASES, ids=[case["id"] for case in CATCH_UP_CASES])
def test_catch_up_case_through_command(
    case: dict[str, Any], command_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = command_results[case["id"]]
    assert result.returncode == 0, result.stderr

    output = json.loads(result.stdout)

    assert sorted(output) == ["cursor", "dropped", "fire"]
    assert output["fire"] == case["expected_fire"]
    assert output["dropped"] == case["expected_dropped"]
    _, _, cursor = _plan_of(case)
    assert output["cursor"] == (None if cursor is None else format_instant(cursor))
