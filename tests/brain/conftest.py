"""A brain application on a test database, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from z4j_brain_plugin.api import create_app
from z4j_brain_plugin.api.auth import create_token
from z4j_brain_plugin.lifespan import brain_lifespan, open_brain
from z4j_brain_plugin.models import Project
from z4j_brain_plugin.settings import BrainSettings

# A Redis database of its own, so messages published by these tests stay apart.
BROKER_URL = "redis://127.0.0.1:6379/14"


@dataclass
class Api:
    client: httpx.AsyncClient
    settings: BrainSettings
    admin: dict[str, str]
    operator: dict[str, str]
    viewer: dict[str, str]
    project: str
    queue: str


def brain_settings(database_url: str, tmp_path: Path) -> BrainSettings:
    return BrainSettings(
        database_url=database_url,
        celery_broker_url=BROKER_URL,
        secret="test-secret-value",
        secret_file=tmp_path / "secret",
        dispatch_retry_initial=0.2,
        dispatch_retry_max=1.0,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = brain_settings(database_url, tmp_path)
    brain = open_brain(settings)
    with brain.writes.begin() as session:
        project = Project(slug="shop", name="Shop", created_at=brain.clock())
        session.add(project)
        session.flush()
        admin = create_token(session, name="admin", role="admin", project=None, now=brain.clock())
        operator = create_token(
            session, name="ops", role="operator", project=project, now=brain.clock()
        )
        viewer = create_token(
            session, name="view", role="viewer", project=project, now=brain.clock()
        )
    brain.engine.dispose()
    app = create_app(settings)
    async with brain_lifespan(settings) as running:
        app.state.brain = running
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://brain.test") as client:
            yield Api(
                client,
                settings,
                bearer(admin),
                bearer(operator),
                bearer(viewer),
                "shop",
                f"q-{uuid.uuid4().hex[:8]}",
            )
