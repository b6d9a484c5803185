"""Declarative schedule files applied with ``z4j-brain apply``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.brain.conftest import brain_settings
from z4j_brain_plugin.brain import Brain
from z4j_brain_plugin.declarative import ApplyReport, apply_spec
from z4j_brain_plugin.errors import ValidationError
from z4j_brain_plugin.lifespan import open_brain
from z4j_brain_plugin.models import Project, Schedule

HEARTBEAT = {
    "name": "heartbeat",
    "engine": "celery",
    "kind": "interval",
    "expression": "10s",
    "task_name": "app.tasks.heartbeat",
}
REPORT = {
    "name": "report",
    "engine": "celery",
    "kind": "cron",
    "expression": "0 6 * * *",
    "timezone": "Europe/Berlin",
    "task_name": "app.tasks.report",
    "catch_up": "fire_one_missed",
}


@pytest.fixture
def brain(database_url: str, tmp_path: Path) -> Any:
    brain = open_brain(brain_settings(database_url, tmp_path))
    with brain.writes.begin() as session:
        session.add(Project(slug="demo", name="demo", created_at=brain.clock()))
    yield brain
    brain.engine.dispose()


def apply(brain: Brain, schedules: list[dict[str, Any]], prune: bool = False) -> ApplyReport:
    with brain.writes.begin() as session:
        project = session.query(Project).filter_by(slug="demo").one()
        return apply_spec(
            session, brain.service, project, schedules, prune=prune, actor="test", now=brain.clock()
        )


def stored(brain: Brain, name: str) -> Schedule:
    with brain.reads() as session:
        return session.query(Schedule).filter_by(name=name).one()


def test_second_apply_changes_nothing(brain: Brain) -> None:
    first = apply(brain, [HEARTBEAT, REPORT])
    assert first.created == ["heartbeat", "report"]
    revision = stored(brain, "report").revision
    second = apply(brain, [HEARTBEAT, REPORT])
    assert second.unchanged == ["heartbeat", "report"]
    assert stored(brain, "report").revision == revision


def test_apply_undoes_api_edit(brain: Brain) -> None:
    apply(brain, [REPORT])
    with brain.writes.begin() as session:
        row = session.query(Schedule).filter_by(name="report").one()
        brain.service.update(
            session, row, {"expression": "*/5 * * * *"}, actor="api", now=brain.clock()
        )
    report = apply(brain, [REPORT])
    assert report.updated == ["report"]
    assert stored(brain, "report").expression == "0 6 * * *"


def test_omitted_field_returns_to_default(brain: Brain) -> None:
    apply(brain, [REPORT])
    without_policy = {key: value for key, value in REPORT.items() if key != "catch_up"}
    apply(brain, [without_policy])
    assert stored(brain, "report").catch_up == "skip"


def test_schedule_from_api_is_not_taken_over(brain: Brain) -> None:
    with brain.writes.begin() as session:
        project = session.query(Project).filter_by(slug="demo").one()
        brain.service.create(session, project, REPORT, actor="api", source="api", now=brain.clock())
    with pytest.raises(ValidationError) as caught:
        apply(brain, [REPORT])
    assert caught.value.field == "schedules[0].name"
    assert "managed by 'api'" in caught.value.message
    assert stored(brain, "report").source == "api"


def test_error_names_schedule_and_writes_nothing(brain: Brain) -> None:
    bad = {**REPORT, "expression": "61 * * * *"}
    with pytest.raises(ValidationError) as caught:
        apply(brain, [HEARTBEAT, bad])
    assert caught.value.field == "schedules[1].expression"
    assert "schedule 'report'" in caught.value.message
    with brain.reads() as session:
        assert session.query(Schedule).count() == 0


def test_prune_deletes_only_declarative(brain: Brain) -> None:
    apply(brain, [HEARTBEAT, REPORT])
    with brain.writes.begin() as session:
        project = session.query(Project).filter_by(slug="demo").one()
        other = {**HEARTBEAT, "name": "from-api"}
        brain.service.create(session, project, other, actor="api", source="api", now=brain.clock())
    report = apply(brain, [HEARTBEAT], prune=True)
    assert report.deleted == ["report"]
    with brain.reads() as session:
        assert sorted(row.name for row in session.query(Schedule)) == ["from-api", "heartbeat"]


def test_cli_rejects_bad_file_with_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "schedules.json"
    spec.write_text(
        json.dumps({"project": "demo", "schedules": [{**HEARTBEAT, "timezone": "Mars/Base"}]})
    )
    env = {
        **os.environ,
        "Z4J_DATABASE_URL": f"sqlite:///{tmp_path / 'z4j.db'}",
        "Z4J_CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    }
    create = [sys.executable, "-m", "z4j_brain_plugin.cli", "project", "create", "demo"]
    subprocess.run(create, env=env, check=True, capture_output=True, timeout=60)
    result = subprocess.run(
        [sys.executable, "-m", "z4j_brain_plugin.cli", "apply", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "schedule 'heartbeat' (schedules[0])" in result.stderr
    assert "Mars/Base" in result.stderr
