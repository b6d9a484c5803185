"""Real workers and a real brain with its scheduler child, shared by the end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.brain_process import BrainProcess, run_brain
from tests.workers import Worker, start_celery_worker, start_huey_consumer

CELERY_BROKER = "redis://127.0.0.1:6379/13"


@dataclass
class Stack:
    brain: BrainProcess
    token: str
    celery: Worker
    huey: Worker
    queue: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return httpx.post(self.brain.base_url + path, json=body, headers=self.headers, timeout=10)

    def patch(self, path: str, body: Any) -> httpx.Response:
        return httpx.patch(self.brain.base_url + path, json=body, headers=self.headers, timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            self.brain.base_url + path, params=params, headers=self.headers, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()

    def create(self, **body: Any) -> dict[str, Any]:
        response = self.post("/api/v1/projects/demo/schedules", body)
        assert response.status_code == 201, response.text
        document: dict[str, Any] = response.json()
        return document

    def fires(self, schedule_id: int, **params: Any) -> list[dict[str, Any]]:
        body = self.get(
            f"/api/v1/projects/demo/schedules/{schedule_id}/fires", limit=1000, **params
        )
        fires: list[dict[str, Any]] = body["fires"]
        return fires


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    huey_url = f"sqlite:///{tmp_path / 'huey.db'}?name=e2e-{uuid.uuid4().hex[:6]}"
    output = tmp_path / "runs.jsonl"
    env = {"Z4J_CELERY_BROKER_URL": CELERY_BROKER, "Z4J_HUEY_URL": huey_url}
    with (
        start_celery_worker(
            CELERY_BROKER, [queue], output, log_path=tmp_path / "celery.log"
        ) as celery,
        start_huey_consumer(huey_url, output, log_path=tmp_path / "huey.log") as huey,
        run_brain(tmp_path, database_url, env) as brain,
    ):
        brain.cli("project", "create", "demo")
        token = brain.cli("token", "create", "--role", "operator", "--project", "demo")
        yield Stack(brain, token, celery, huey, queue)
