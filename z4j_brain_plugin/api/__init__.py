"""The brain's ASGI application: REST API, health endpoints and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from z4j_brain_plugin.api import health, routes
from z4j_brain_plugin.api.errors import HANDLERS
from z4j_brain_plugin.lifespan import brain_lifespan
from z4j_brain_plugin.settings import BrainSettings


def create_app(settings: BrainSettings | None = None) -> Starlette:
    """Build the ``z4j-brain serve`` application around the lifespan hook."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with brain_lifespan(settings) as brain:
            app.state.brain = brain
            yield

    return Starlette(
        routes=[*health.ROUTES, *routes.ROUTES],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
