"""Bulk schedule creation and keyset pages of fire history, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.brain.conftest import Api
from tests.brain.test_rest_api import SCHEDULES, create, schedule_body
from z4j_brain_plugin.audit import verify_chain
from z4j_brain_plugin.models import AuditEntry, Fire, Schedule, make_engine, make_session_factory

pytestmark = pytest.mark.anyio

BULK = SCHEDULES + ":bulk"


def bodies(api: Api, count: int) -> list[dict[str, Any]]:
    return [schedule_body(api, name=f"bulk-{index}", args=[index]) for index in range(count)]


def stored(api: Api) -> tuple[list[str], list[AuditEntry]]:
    engine = make_engine(api.settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            names = list(session.scalars(select(Schedule.name).order_by(Schedule.id)))
            entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
            return names, entries
    finally:
        engine.dispose()


async def test_bulk_creates_all_with_audit_chain(api: Api) -> None:
    await create(api, name="before-bulk")
    response = await api.client.post(
        BULK, json={"schedules": bodies(api, 25)}, headers=api.operator
    )

    assert response.status_code == 201, response.text
    documents = response.json()["schedules"]
    assert [document["name"] for document in documents] == [f"bulk-{index}" for index in range(25)]
    assert all(document["next_run_at"] is not None for document in documents)
    names, entries = stored(api)
    assert names == ["before-bulk", *(f"bulk-{index}" for index in range(25))]
    assert [entry.action for entry in entries] == ["schedule.create"] * 26
    assert [entry.target for entry in entries[1:]] == [
        f"schedule:{document['id']}" for document in documents
    ]
    assert verify_chain(entries, [b"test-secret-value"]) == []


async def test_bulk_accepts_plain_list(api: Api) -> None:
    response = await api.client.post(BULK, json=bodies(api, 3), headers=api.operator)

    assert response.status_code == 201, response.text
    assert len(response.json()["schedules"]) == 3


@pytest.mark.parametrize(
    ("index", "overrides", "field", "value"),
    [
        (2, {"expression": "61 * * * *"}, "schedules[2].expression", "61 * * * *"),
        (0, {"timezone": "Mars/Olympus"}, "schedules[0].timezone", "Mars/Olympus"),
        (4, {"colour": "blue"}, "schedules[4].colour", "blue"),
        (1, {"name": "bulk-0"}, "schedules[1].name", "bulk-0"),
    ],
)
async def test_bulk_rejects_bad_item_and_writes_nothing(
    api: Api, index: int, overrides: dict[str, Any], field: str, value: Any
) -> None:
    items = bodies(api, 5)
    items[index].update(overrides)

    response = await api.client.post(BULK, json={"schedules": items}, headers=api.operator)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    assert error["value"] == value
    assert f"schedules[{index}]" in error["message"]
    assert stored(api) == ([], [])


async def test_bulk_rejects_name_taken_in_project(api: Api) -> None:
    await create(api, name="bulk-3")

    response = await api.client.post(BULK, json={"schedules": bodies(api, 5)}, headers=api.operator)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "schedules[3].name"
    assert stored(api)[0] == ["bulk-3"]


@pytest.mark.parametrize("body", [{"schedules": []}, {"schedules": "x"}, {"items": []}, "text"])
async def test_bulk_rejects_bad_envelope(api: Api, body: Any) -> None:
    response = await api.client.post(BULK, json=body, headers=api.operator)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "schedules"


async def test_bulk_rejects_too_many_items(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("z4j_brain_plugin.api.routes.MAX_BULK", 4)

    response = await api.client.post(BULK, json={"schedules": bodies(api, 5)}, headers=api.operator)

    assert response.status_code == 422
    assert "send 1 to 4 per request" in response.json()["error"]["message"]
    assert stored(api) == ([], [])


async def test_bulk_needs_operator(api: Api) -> None:
    response = await api.client.post(BULK, json={"schedules": bodies(api, 2)}, headers=api.viewer)

    assert response.status_code == 403
    assert stored(api) == ([], [])


def add_fires(
    api: Api, schedule_id: int, instants: list[datetime], status: str = "dispatched"
) -> list[str]:
    engine = make_engine(api.settings.database_url)
    fire_ids = [str(uuid.uuid4()) for _ in instants]
    payload = {
        "engine": "celery",
        "connection": "default",
        "task_name": "t",
        "args": [],
        "kwargs": {},
        "queue": None,
    }
    rows = [
        {
            "id": fire_id,
            "schedule_id": schedule_id,
            "scheduled_for": instant,
            "slot": None,
            "fired_at": instant,
            "trigger": "manual",
            "status": status,
            "payload": payload,
            "engine": "celery",
            "connection": "default",
            "attempts": 1,
            "next_attempt_at": None,
            "epoch": 0,
        }
        for fire_id, instant in zip(fire_ids, instants, strict=True)
    ]
    try:
        with engine.begin() as db:
            db.execute(insert(Fire.__table__), rows)
    finally:
        engine.dispose()
    return fire_ids


async def walk(api: Api, url: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(50):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(url, params=query, headers=api.viewer)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["fires"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("next_cursor never ended after 50 pages")


async def test_history_pages_cover_all_fires_once(api: Api) -> None:
    schedule = await create(api)
    url = f"{SCHEDULES}/{schedule['id']}/fires"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Groups of three fires share an instant, so pages must split ties by id.
    instants = [start + timedelta(minutes=index // 3) for index in range(25)]
    fire_ids = add_fires(api, schedule["id"], instants)

    pages = await walk(api, url, limit=10)

    assert [len(page) for page in pages] == [10, 10, 5]
    listed = [fire["id"] for page in pages for fire in page]
    assert sorted(listed) == sorted(fire_ids)
    keys = [(fire["scheduled_for"], fire["id"]) for page in pages for fire in page]
    assert keys == sorted(keys, reverse=True)


async def test_history_pages_with_status_filter(api: Api) -> None:
    schedule = await create(api)
    url = f"{SCHEDULES}/{schedule['id']}/fires"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    failed = add_fires(
        api, schedule["id"], [start + timedelta(hours=index) for index in range(0, 30, 4)], "failed"
    )
    add_fires(api, schedule["id"], [start + timedelta(hours=index) for index in range(1, 30, 4)])

    pages = await walk(api, url, limit=3, status="failed")

    assert sorted(fire["id"] for page in pages for fire in page) == sorted(failed)
    assert {fire["status"] for page in pages for fire in page} == {"failed"}


@pytest.mark.parametrize("cursor", ["not-base64!", "bm8tYmFy", "MjAyNi0wMS0wMVQwMDowMDowMHxhYmM"])
async def test_history_rejects_invalid_cursor(api: Api, cursor: str) -> None:
    schedule = await create(api)

    response = await api.client.get(
        f"{SCHEDULES}/{schedule['id']}/fires", params={"cursor": cursor}, headers=api.viewer
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "cursor"
    assert response.json()["error"]["value"] == cursor


async def test_history_last_page_has_no_cursor(api: Api) -> None:
    schedule = await create(api)
    add_fires(api, schedule["id"], [datetime(2026, 1, 1, tzinfo=UTC)])

    body = (
        await api.client.get(
            f"{SCHEDULES}/{schedule['id']}/fires", params={"limit": 1}, headers=api.viewer
        )
    ).json()

    assert len(body["fires"]) == 1
    assert body["next_cursor"] is None
