"""Invalid settings stop both commands with the variable, the value and the rule, writing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from z4j_scheduler.serve import EXIT_CONFIG

CASES = [
    ({"Z4J_LOOKAHEAD": "-1"}, "invalid Z4J_LOOKAHEAD '-1': must be greater than or equal to 0"),
    ({"Z4J_SEND_AHEAD": "soon"}, "invalid Z4J_SEND_AHEAD 'soon': must be a valid number"),
    ({"Z4J_SEND_AHEAD": "nan"}, "invalid Z4J_SEND_AHEAD 'nan': must be a finite number"),
    ({"Z4J_LISTEN_POLL_INTERVAL": "0"}, "invalid Z4J_LISTEN_POLL_INTERVAL '0': must be greater"),
]


@pytest.mark.parametrize(("env", "message"), CASES)
def test_scheduler_rejects_bad_setting(tmp_path: Path, env: dict[str, str], message: str) -> None:
    database = tmp_path / "z4j.db"
    result = subprocess.run(
        [sys.executable, "-m", "z4j_scheduler", "serve"],
        env={**os.environ, "Z4J_DATABASE_URL": f"sqlite:///{database}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_CONFIG
    assert message in result.stderr
    assert "pydantic" not in result.stderr
    assert not database.exists()


def test_brain_rejects_bad_setting(tmp_path: Path) -> None:
    database = tmp_path / "z4j.db"
    result = subprocess.run(
        [sys.executable, "-m", "z4j_brain_plugin.cli", "migrate"],
        env={**os.environ, "Z4J_DATABASE_URL": f"sqlite:///{database}", "Z4J_HTTP_PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "z4j-brain: invalid Z4J_HTTP_PORT 'abc': must be a valid integer" in result.stderr
    assert not database.exists()
