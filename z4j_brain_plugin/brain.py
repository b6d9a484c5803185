"""The brain's shared state, handed to the REST API, the gRPC handler and the hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from z4j_brain_plugin.fires import utc_now
from z4j_brain_plugin.outbox import Outbox
from z4j_brain_plugin.schedules import ScheduleService
from z4j_brain_plugin.settings import BrainSettings

T = TypeVar("T")


@dataclass
class Brain:
    settings: BrainSettings
    engine: Engine
    reads: sessionmaker[Session]
    writes: sessionmaker[Session]
    service: ScheduleService
    outbox: Outbox
    clock: Callable[[], datetime] = utc_now
    # Filled in by the lifespan hook: objects whose state /readyz reports.
    components: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        database = self.engine.url.render_as_string(hide_password=True)
        return f"<Brain database={database} components={sorted(self.components)}>"

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` with a read session in a worker thread."""
        return await anyio.to_thread.run_sync(self._read, work)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one write transaction in a worker thread."""
        return await anyio.to_thread.run_sync(self._write, work)

    def _read(self, work: Callable[[Session], T]) -> T:
        with self.reads() as session:
            return work(session)

    def _write(self, work: Callable[[Session], T]) -> T:
        with self.writes.begin() as session:
            return work(session)
