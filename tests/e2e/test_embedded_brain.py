"""End to end: REST schedules fired by the embedded scheduler and run by real workers."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from tests.e2e.conftest import Stack
from tests.workers import read_runs, wait_for_runs


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_schedule_fires_into_celery_and_huey(stack: Stack) -> None:
    celery = stack.create(
        name="celery-every-second",
        engine="celery",
        kind="interval",
        expression="1",
        task_name="examples.celery_app.tasks.record_run",
        args=["celery-tick", 7],
        kwargs={"size": "big"},
        queue=stack.queue,
    )
    huey = stack.create(
        name="huey-every-second",
        engine="huey",
        kind="cron",
        expression="* * * * * *",
        task_name="examples.huey_app.tasks.record_run",
        args=["huey-tick"],
        kwargs={"n": 1},
    )
    runs = wait_for_runs(
        stack.celery.output, lambda run: run["label"] == "celery-tick", count=2, worker=stack.celery
    )
    assert runs[0]["args"] == [7]
    assert runs[0]["kwargs"] == {"size": "big"}
    assert runs[0]["queue"] == stack.queue
    huey_runs = wait_for_runs(
        stack.huey.output, lambda run: run["label"] == "huey-tick", count=2, worker=stack.huey
    )
    assert huey_runs[0]["kwargs"] == {"n": 1}

    for schedule, label_runs in ((celery, runs), (huey, huey_runs)):
        fires = {fire["id"]: fire for fire in stack.fires(schedule["id"], status="dispatched")}
        for run in label_runs:
            fire = fires[run["task_id"]]
            assert fire["task_id"] == run["task_id"]
            assert fire["trigger"] == "schedule"
            assert instant(fire["fired_at"]) >= instant(fire["scheduled_for"])


def test_live_edit_changes_cadence(stack: Stack) -> None:
    schedule = stack.create(
        name="edited",
        engine="celery",
        kind="interval",
        expression="1",
        task_name="examples.celery_app.tasks.record_run",
        args=["before-edit"],
        queue=stack.queue,
    )
    wait_for_runs(
        stack.celery.output, lambda run: run["label"] == "before-edit", worker=stack.celery
    )
    response = stack.patch(
        f"/api/v1/projects/demo/schedules/{schedule['id']}",
        {"expression": "2", "args": ["after-edit"]},
    )
    assert response.status_code == 200, response.text
    edited_at = instant(response.json()["updated_at"])
    wait_for_runs(
        stack.celery.output, lambda run: run["label"] == "after-edit", count=3, worker=stack.celery
    )
    slots = sorted(
        instant(fire["scheduled_for"])
        for fire in stack.fires(schedule["id"])
        if instant(fire["fired_at"]) > edited_at
    )
    gaps = {later - earlier for earlier, later in itertools.pairwise(slots)}
    assert gaps == {timedelta(seconds=2)}


def test_disable_stops_fires(stack: Stack) -> None:
    schedule = stack.create(
        name="to-disable",
        engine="celery",
        kind="interval",
        expression="1",
        task_name="examples.celery_app.tasks.record_run",
        args=["disabled-soon"],
        queue=stack.queue,
    )
    wait_for_runs(
        stack.celery.output, lambda run: run["label"] == "disabled-soon", worker=stack.celery
    )
    response = stack.post(f"/api/v1/projects/demo/schedules/{schedule['id']}/disable")
    assert response.status_code == 200
    disabled_at = instant(response.json()["updated_at"])
    # A second schedule firing twice after the disable proves the scheduler
    # ticked several times since.
    stack.create(
        name="witness",
        engine="celery",
        kind="interval",
        expression="1",
        task_name="examples.celery_app.tasks.record_run",
        args=["witness"],
        queue=stack.queue,
    )
    wait_for_runs(
        stack.celery.output, lambda run: run["label"] == "witness", count=2, worker=stack.celery
    )
    late = [fire for fire in stack.fires(schedule["id"]) if instant(fire["fired_at"]) > disabled_at]
    assert late == []


def test_run_now_fires_once(stack: Stack) -> None:
    schedule = stack.create(
        name="yearly",
        engine="celery",
        kind="cron",
        expression="0 0 1 1 *",
        task_name="examples.celery_app.tasks.record_run",
        args=["run-now"],
        queue=stack.queue,
    )
    response = stack.post(f"/api/v1/projects/demo/schedules/{schedule['id']}/run-now")
    assert response.status_code == 202
    fire_id = response.json()["id"]
    runs = wait_for_runs(
        stack.celery.output, lambda run: run["label"] == "run-now", worker=stack.celery
    )
    assert runs[0]["task_id"] == fire_id
    fires = stack.fires(schedule["id"])
    assert [fire["trigger"] for fire in fires] == ["manual"]
    assert [run["label"] for run in read_runs(stack.celery.output)].count("run-now") == 1
