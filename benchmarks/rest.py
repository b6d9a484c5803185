"""REST figures: creating schedules, and reading pages of a long fire history."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from benchmarks import database
from benchmarks.context import Bench
from benchmarks.fires import summary_ms

logger = logging.getLogger(__name__)

SCHEDULES = "/api/v1/projects/bench/schedules"
# Schedules per bulk request.
BULK_CHUNK = 1000
PAGE = 100


def schedule_body(index: int, queue: str) -> dict[str, Any]:
    """Return a valid schedule with a unique name; kinds and zones vary with ``index``."""
    body: dict[str, Any] = {
        "name": f"rest-{index}",
        "engine": "celery",
        "task_name": database.TASK_NAME,
        "args": [index],
        "kwargs": {"source": "bench"},
        "queue": queue,
    }
    if index % 2:
        body.update(kind="cron", expression=f"{index % 60} 3 * * *", timezone="Europe/Berlin")
    else:
        body.update(kind="interval", expression="1h", start_at="2030-01-01T00:00:00Z")
    return body


def measure_create(bench: Bench) -> dict[str, Any]:
    """Create schedules through the bulk endpoint, then one by one for comparison."""
    database.clear_schedules(bench.db)
    queue = bench.queue("rest")
    with httpx.Client(base_url=bench.stack.base_url, headers=_auth(bench), timeout=120) as client:
        bulk = _create_bulk(client, bench.sizes.rest_bulk_schedules, queue)
        single = _create_single(
            client, bench.sizes.rest_bulk_schedules, bench.sizes.rest_single_schedules, queue
        )
    stored = database.scalar(bench.db, "SELECT count(*) FROM schedules")
    audited = database.scalar(bench.db, "SELECT count(*) FROM audit_log")
    database.clear_schedules(bench.db)
    return {"bulk": bulk, "single": single, "stored": stored, "audit_entries": audited}


def _create_bulk(client: httpx.Client, count: int, queue: str) -> dict[str, Any]:
    bodies = [schedule_body(index, queue) for index in range(count)]
    started = time.perf_counter()
    statuses = []
    for offset in range(0, count, BULK_CHUNK):
        response = client.post(
            SCHEDULES + ":bulk", json={"schedules": bodies[offset : offset + BULK_CHUNK]}
        )
        statuses.append(response.status_code)
        if response.status_code != 201:
            return {"error": f"HTTP {response.status_code}: {response.text[:300]}"}
    elapsed = time.perf_counter() - started
    return {
        "schedules": count,
        "chunk": BULK_CHUNK,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed),
    }


def _create_single(client: httpx.Client, offset: int, count: int, queue: str) -> dict[str, Any]:
    started = time.perf_counter()
    for index in range(offset, offset + count):
        response = client.post(SCHEDULES, json=schedule_body(index, queue))
        if response.status_code != 201:
            return {"error": f"HTTP {response.status_code}: {response.text[:300]}"}
    elapsed = time.perf_counter() - started
    return {"schedules": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed)}


def measure_history(bench: Bench) -> dict[str, Any]:
    """Seed one schedule with a long history and time page requests of several kinds."""
    database.clear_schedules(bench.db)
    count = bench.sizes.history_fires
    first = datetime.now(UTC) - timedelta(seconds=count + 10)
    database.seed_schedules(
        bench.db,
        prefix="history-",
        count=1,
        first=first + timedelta(days=30),
        step=timedelta(0),
        period_seconds=86400,
        queue=bench.queue("history"),
    )
    schedule_id = database.count(bench.db, "SELECT id FROM schedules WHERE name = 'history-1'")
    started = time.perf_counter()
    database.seed_fire_history(bench.db, schedule_id, count, first)
    seed_seconds = time.perf_counter() - started
    url = f"{SCHEDULES}/{schedule_id}/fires"
    middle = (first + timedelta(seconds=count // 2)).isoformat().replace("+00:00", "Z")
    requests = bench.sizes.history_requests
    with httpx.Client(base_url=bench.stack.base_url, headers=_auth(bench), timeout=60) as client:
        result = {
            "fires": count,
            "seed_s": round(seed_seconds, 1),
            "newest_page": _time_requests(client, url, {"limit": PAGE}, requests),
            "page_before_middle": _time_requests(
                client, url, {"limit": PAGE, "until": middle}, requests
            ),
            "failed_only": _time_requests(
                client, url, {"limit": PAGE, "status": "failed"}, requests
            ),
            "walk_pages": _walk_pages(client, url, requests),
        }
    database.clear_schedules(bench.db)
    return result


def _time_requests(
    client: httpx.Client, url: str, params: dict[str, Any], count: int
) -> dict[str, Any]:
    client.get(url, params=params)
    durations = []
    rows = 0
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url, params=params)
        durations.append(time.perf_counter() - started)
        if response.status_code != 200:
            return {"error": f"HTTP {response.status_code}: {response.text[:300]}"}
        rows = len(response.json()["fires"])
    return {"requests": count, "rows": rows, **summary_ms(durations)}


def _walk_pages(client: httpx.Client, url: str, count: int) -> dict[str, Any]:
    """Follow ``next_cursor`` from the newest page for ``count`` pages."""
    durations = []
    cursor = None
    for _ in range(count):
        params: dict[str, Any] = {"limit": PAGE}
        if cursor is not None:
            params["cursor"] = cursor
        started = time.perf_counter()
        response = client.get(url, params=params)
        durations.append(time.perf_counter() - started)
        cursor = response.json().get("next_cursor") if response.status_code == 200 else None
        if cursor is None:
            return {
                "error": f"no next_cursor after {len(durations)} page(s): HTTP {response.status_code}"
            }
    return {"pages": count, **summary_ms(durations)}


def _auth(bench: Bench) -> dict[str, str]:
    return {"Authorization": f"Bearer {bench.db.operator_token}"}
