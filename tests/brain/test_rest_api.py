"""REST API behaviour on SQLite and PostgreSQL, with a real Celery broker on Redis."""

from __future__ import annotations

import time

import anyio
from typing import Any

import pytest

from tests.brain.conftest import Api

pytestmark = pytest.mark.anyio

SCHEDULES = "/api/v1/projects/shop/schedules"


def schedule_body(api: Api, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "nightly-report",
        "engine": "celery",
        "kind": "cron",
        "expression": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "task_name": "reports.nightly",
        "args": [1, "two"],
        "kwargs": {"verbose": True},
        "queue": api.queue,
    }
    body.update(overrides)
    return body


async def create(api: Api, **overrides: Any) -> dict[str, Any]:
    response = await api.client.post(
        SCHEDULES, json=schedule_body(api, **overrides), headers=api.operator
    )
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


async def listed(api: Api) -> list[dict[str, Any]]:
    response = await api.client.get(SCHEDULES, headers=api.viewer)
    assert response.status_code == 200
    schedules: list[dict[str, Any]] = response.json()["schedules"]
    return schedules


async def test_create_schedule_computes_cursor(api: Api) -> None:
    document = await create(api)
    assert document["revision"] == 1
    assert document["enabled"] is True
    assert document["next_run_at"].endswith(("T01:00:00Z", "T02:00:00Z"))
    assert [row["name"] for row in await listed(api)] == ["nightly-report"]


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"expression": "61 * * * *"}, "expression", "61 * * * *"),
        ({"expression": "0 0 30 2 *"}, "expression", "0 0 30 2 *"),
        ({"timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
        ({"kind": "interval", "expression": "0"}, "expression", "0"),
        ({"engine": "rq"}, "engine", "rq"),
        ({"catch_up": "sometimes"}, "catch_up", "sometimes"),
        ({"colour": "blue"}, "colour", "blue"),
        (
            {"kind": "one_shot", "expression": "2001-01-01T00:00:00Z"},
            "expression",
            "2001-01-01T00:00:00Z",
        ),
        ({"args": {"not": "a list"}}, "args", {"not": "a list"}),
        ({"connection": "second-redis"}, "connection", "second-redis"),
    ],
)
async def test_invalid_schedule_is_rejected_and_not_written(
    api: Api, overrides: dict[str, Any], field: str, value: Any
) -> None:
    response = await api.client.post(
        SCHEDULES, json=schedule_body(api, **overrides), headers=api.operator
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    assert error["value"] == value
    assert str(value) in error["message"] or field in error["message"]
    assert await listed(api) == []


async def test_missing_required_field_is_named(api: Api) -> None:
    body = schedule_body(api)
    del body["task_name"]
    response = await api.client.post(SCHEDULES, json=body, headers=api.operator)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "task_name"


async def test_duplicate_name_is_rejected(api: Api) -> None:
    await create(api)
    response = await api.client.post(SCHEDULES, json=schedule_body(api), headers=api.operator)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "name"


async def test_update_bumps_revision_and_moves_cursor(api: Api) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    response = await api.client.patch(
        url, json={"expression": "*/5 * * * *", "timezone": "UTC"}, headers=api.operator
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["revision"] == 2
    assert updated["expression"] == "*/5 * * * *"
    assert updated["next_run_at"] != document["next_run_at"]


async def test_invalid_update_changes_nothing(api: Api) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    response = await api.client.patch(url, json={"timezone": "EST"}, headers=api.operator)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "timezone"
    assert (await api.client.get(url, headers=api.viewer)).json() == document


async def test_disable_and_enable(api: Api) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    disabled = (await api.client.post(f"{url}/disable", headers=api.operator)).json()
    assert disabled["enabled"] is False
    enabled = (await api.client.post(f"{url}/enable", headers=api.operator)).json()
    assert enabled["enabled"] is True
    assert enabled["revision"] == 3


async def test_delete_schedule(api: Api) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    assert (await api.client.delete(url, headers=api.operator)).status_code == 204
    assert (await api.client.get(url, headers=api.viewer)).status_code == 404


async def wait_for_fire(
    api: Api, url: str, predicate: Any, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fires = (await api.client.get(f"{url}/fires", headers=api.viewer)).json()["fires"]
        if fires and predicate(fires[0]):
            fire: dict[str, Any] = fires[0]
            return fire
        await anyio.sleep(0.05)
    raise AssertionError(f"no fire matched within {timeout} s: {fires}")


async def test_run_now_dispatches_to_broker(api: Api) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    response = await api.client.post(f"{url}/run-now", headers=api.operator)
    assert response.status_code == 202
    fire = response.json()
    assert fire["trigger"] == "manual"
    dispatched = await wait_for_fire(api, url, lambda item: item["status"] == "dispatched")
    assert dispatched["id"] == fire["id"]
    assert dispatched["task_id"] == fire["id"]
    assert dispatched["attempts"] == 1


async def test_fire_history_filters(api: Api) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    await api.client.post(f"{url}/run-now", headers=api.operator)
    await wait_for_fire(api, url, lambda item: item["status"] == "dispatched")
    by_status = (
        await api.client.get(f"{url}/fires", params={"status": "dispatched"}, headers=api.viewer)
    ).json()
    assert [fire["status"] for fire in by_status["fires"]] == ["dispatched"]
    none_failed = (
        await api.client.get(f"{url}/fires", params={"status": "failed"}, headers=api.viewer)
    ).json()
    assert none_failed["fires"] == []
    future = (
        await api.client.get(
            f"{url}/fires", params={"since": "2999-01-01T00:00:00Z"}, headers=api.viewer
        )
    ).json()
    assert future["fires"] == []
    bad = await api.client.get(f"{url}/fires", params={"status": "done"}, headers=api.viewer)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "status"


async def test_requests_without_token_are_unauthorized(api: Api) -> None:
    assert (await api.client.get(SCHEDULES)).status_code == 401
    assert (
        await api.client.get(SCHEDULES, headers={"Authorization": "Bearer z4j_nope"})
    ).status_code == 401


async def test_viewer_cannot_write(api: Api) -> None:
    response = await api.client.post(SCHEDULES, json=schedule_body(api), headers=api.viewer)
    assert response.status_code == 403
    assert await listed(api) == []


async def test_project_token_cannot_reach_other_project(api: Api) -> None:
    created = await api.client.post("/api/v1/projects", json={"slug": "other"}, headers=api.admin)
    assert created.status_code == 201
    response = await api.client.get("/api/v1/projects/other/schedules", headers=api.operator)
    assert response.status_code == 403


async def test_invalid_project_slug_is_rejected(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/projects", json={"slug": "Not Valid"}, headers=api.admin
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "slug"


async def test_readyz_reports_database(api: Api) -> None:
    body = (await api.client.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["epoch"] == 0


@pytest.mark.parametrize("field", ["name", "timezone", "engine", "task_name", "enabled", "args", "kwargs"])
async def test_null_field_is_rejected(api: Api, field: str) -> None:
    document = await create(api)
    url = f"{SCHEDULES}/{document['id']}"
    response = await api.client.patch(url, json={field: None}, headers=api.operator)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert (await api.client.get(url, headers=api.viewer)).json()["revision"] == 1


async def test_rename_to_existing_name_is_rejected(api: Api) -> None:
    await create(api)
    other = await create(api, name="second")
    url = f"{SCHEDULES}/{other['id']}"
    response = await api.client.patch(url, json={"name": "nightly-report"}, headers=api.operator)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "name"
    assert (await api.client.get(url, headers=api.viewer)).json()["name"] == "second"
