"""The ``next`` and ``catch-up`` commands: output formats and input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from z4j_scheduler.cli import main
from z4j_scheduler.semantics import format_instant, parse_instant

COMMAND = (sys.executable, "-m", "z4j_scheduler.cli")
COMMAND_TIMEOUT_SECONDS = 120


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> dict[str, object]:
    status, output, error = run(capsys, *arguments, "--json")
    assert status == 0, error
    parsed: dict[str, object] = json.loads(output)
    return parsed


def test_next_table_marks_moved_slot(capsys: pytest.CaptureFixture[str]) -> None:
    status, output, _ = run(
        capsys,
        "next",
        "--kind=cron",
        "--expression=30 2 * * *",
        "--timezone=America/New_York",
        "--after=2024-03-09T12:00:00Z",
        "--count=2",
    )
    lines = output.splitlines()

    assert status == 0
    assert "America/New_York" in lines[1]
    assert "UTC" in lines[1]
    moved = next(line for line in lines if "2024-03-10T07:00:00Z" in line)
    assert "2024-03-10 03:00:00 -04:00 EDT" in moved
    assert "moved" in moved
    plain = next(line for line in lines if "2024-03-11T06:30:00Z" in line)
    assert "2024-03-11 02:30:00 -04:00 EDT" in plain
    assert "moved" not in plain


def test_next_table_marks_repeated_wall_time(capsys: pytest.CaptureFixture[str]) -> None:
    _, output, _ = run(
        capsys,
        "next",
        "--kind=cron",
        "--expression=0 * * * *",
        "--timezone=America/New_York",
        "--after=2024-11-03T04:30:00Z",
        "--count=3",
    )
    rows = output.splitlines()[2:]

    assert "01:00:00 -04:00 EDT" in rows[0]
    assert "first occurrence" in rows[0]
    assert "01:00:00 -05:00 EST" in rows[1]
    assert "second occurrence" in rows[1]
    assert "occurrence" not in rows[2]


def test_next_json_is_one_object(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "next",
        "--kind",
        "cron",
        "--expression",
        "@daily",
        "--after",
        "2026-03-08T00:00:00Z",
    )

    assert output == {
        "slots": [
            "2026-03-09T00:00:00Z",
            "2026-03-10T00:00:00Z",
            "2026-03-11T00:00:00Z",
            "2026-03-12T00:00:00Z",
            "2026-03-13T00:00:00Z",
        ]
    }


def test_next_after_defaults_to_clock(capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC).replace(microsecond=0)

    output = run_json(
        capsys, "next", "--kind", "cron", "--expression", "* * * * * *", "--count", "3"
    )

    texts = output["slots"]
    assert isinstance(texts, list)
    slots = [parse_instant(text, "slot") for text in texts]
    assert len(slots) == 3
    assert all(slot > before for slot in slots)
    assert slots[0] < before + timedelta(minutes=5)


def test_next_interval_anchors_at_after(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "next",
        "--kind=interval",
        "--expression=90m",
        "--after=2026-03-08T00:00:00Z",
        "--count=2",
    )

    assert output == {"slots": ["2026-03-08T01:30:00Z", "2026-03-08T03:00:00Z"]}


def test_next_interval_with_start_at(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "next",
        "--kind=interval",
        "--expression=600",
        "--start-at=2026-03-08T00:05:00+01:00",
        "--after=2026-03-08T00:00:00Z",
        "--count=1",
    )

    assert output == {"slots": ["2026-03-08T00:05:00Z"]}


def test_next_prints_fraction_only_when_present(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "next",
        "--kind=one_shot",
        "--expression=2018-12-04T15:00:00.001+00:00",
        "--after=2018-12-04T15:00:00Z",
    )

    assert output == {"slots": ["2018-12-04T15:00:00.001Z"]}


def test_catch_up_json(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "catch-up",
        "--kind=cron",
        "--expression=0 * * * *",
        "--policy=fire_one_missed",
        "--cursor=2024-05-01T00:00:00Z",
        "--now=2024-05-01T05:00:30Z",
    )

    assert output == {
        "fire": ["2024-05-01T04:00:00Z", "2024-05-01T05:00:00Z"],
        "cursor": "2024-05-01T06:00:00Z",
        "dropped": 0,
    }


def test_catch_up_json_cursor_null_when_done(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "catch-up",
        "--kind=one_shot",
        "--expression=2024-05-01T02:00:00Z",
        "--policy=skip",
        "--cursor=2024-05-01T00:00:00Z",
        "--now=2024-05-01T05:00:00Z",
        "--grace=0",
    )

    assert output == {"fire": [], "cursor": None, "dropped": 0}


def test_catch_up_json_reports_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "catch-up",
        "--kind=cron",
        "--expression=* * * * *",
        "--policy=fire_all_missed",
        "--cursor=2024-05-01T00:00:00Z",
        "--now=2024-05-02T00:00:00Z",
        "--grace=0.5",
    )

    fires = output["fire"]
    assert isinstance(fires, list)
    assert len(fires) == 1001
    assert fires[-1] == "2024-05-02T00:00:00Z"
    assert output["dropped"] == 1440 - 1000


def test_catch_up_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, output, _ = run(
        capsys,
        "catch-up",
        "--kind=cron",
        "--expression=0 * * * *",
        "--policy=fire_all_missed",
        "--cursor=2024-05-01T03:00:00Z",
        "--now=2024-05-01T05:00:30Z",
    )

    assert status == 0
    assert "2024-05-01T03:00:00Z  missed" in output
    assert "2024-05-01T05:00:00Z  on time" in output
    assert "missed slots: 2" in output
    assert "new cursor: 2024-05-01T06:00:00Z" in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["next", "--kind=cron", "--expression=* * * * *", "--timezone=Mars/Olympus"],
            "z4j-scheduler: invalid timezone 'Mars/Olympus': unknown time zone",
        ),
        (
            ["next", "--kind=cron", "--expression=* * * * *", "--timezone=+02:00"],
            "z4j-scheduler: invalid timezone '+02:00': ",
        ),
        (
            ["next", "--kind=cron", "--expression=61 * * * *"],
            "z4j-scheduler: invalid expression '61 * * * *': minute 61 is out of range 0-59",
        ),
        (
            ["next", "--kind=cron", "--expression=0 0 30 2 *"],
            "z4j-scheduler: invalid expression '0 0 30 2 *': never matches",
        ),
        (["next", "--kind=cron", "--expression=@daily", "--count=0"], "invalid count '0'"),
        (["next", "--kind=cron", "--expression=@daily", "--count=1001"], "invalid count '1001'"),
        (["next", "--kind=cron", "--expression=@daily", "--count=five"], "invalid count 'five'"),
        (
            ["next", "--kind=cron", "--expression=@daily", "--after=2024-01-01T00:00"],
            "invalid after '2024-01-01T00:00': needs a UTC offset or Z",
        ),
        (["next", "--kind=hourly", "--expression=@daily"], "invalid kind 'hourly'"),
        (
            ["next", "--kind=interval", "--expression=10m", "--start-at=soon"],
            "invalid start_at 'soon'",
        ),
        (
            ["next", "--kind=solar", "--expression=sunrise 95 4"],
            "invalid expression 'sunrise 95 4': latitude 95 is out of range",
        ),
        (
            [
                "catch-up",
                "--kind=cron",
                "--expression=@daily",
                "--policy=coalesce",
                "--cursor=2024-01-01T00:00:00Z",
                "--now=2024-01-02T00:00:00Z",
            ],
            "invalid catch_up 'coalesce'",
        ),
        (
            [
                "catch-up",
                "--kind=cron",
                "--expression=@daily",
                "--policy=skip",
                "--cursor=2024-01-01T00:00:00Z",
                "--now=2024-01-02T00:00:00Z",
                "--grace=-1",
            ],
            "invalid grace '-1': must be a number of seconds, 0 or more",
        ),
        (
            [
                "catch-up",
                "--kind=cron",
                "--expression=@daily",
                "--policy=skip",
                "--cursor=yesterday",
                "--now=2024-01-02T00:00:00Z",
            ],
            "invalid cursor 'yesterday'",
        ),
    ],
)
def test_invalid_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    status, output, error = run(capsys, *arguments)

    assert status == 2
    assert output == ""
    assert len(error.splitlines()) == 1
    assert message in error


def test_missing_option_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["next", "--expression", "@daily"])

    assert raised.value.code == 2
    assert "--kind" in capsys.readouterr().err


def test_command_runs_as_process() -> None:
    result = subprocess.run(
        [
            *COMMAND,
            "next",
            "--kind=cron",
            "--expression=0 9 * * 1-5",
            "--timezone=Europe/Berlin",
            "--after=2026-03-27T00:00:00Z",
            "--count=3",
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "2026-03-27T08:00:00Z  2026-03-27 09:00:00 +01:00 CET" in result.stdout
    assert "2026-03-30T07:00:00Z  2026-03-30 09:00:00 +02:00 CEST" in result.stdout


def test_command_error_as_process() -> None:
    result = subprocess.run(
        [
            *COMMAND,
            "next",
            "--kind=cron",
            "--expression=* * * * *",
            "--timezone=Mars/Olympus",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("z4j-scheduler: invalid timezone 'Mars/Olympus': ")
    assert len(result.stderr.splitlines()) == 1


def test_json_slots_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_json(
        capsys,
        "next",
        "--kind=solar",
        "--expression=sunset 52.3676 4.9041 -15m",
        "--timezone=Europe/Amsterdam",
        "--after=2024-03-30T00:00:00Z",
        "--count=2",
    )

    slots = output["slots"]
    assert isinstance(slots, list)
    assert [format_instant(parse_instant(slot, "slot")) for slot in slots] == slots
    assert all(slot.endswith("Z") for slot in slots)
