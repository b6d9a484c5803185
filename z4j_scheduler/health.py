"""The scheduler process's own HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` returns 200 while the event loop runs. ``/readyz`` reports the
leader state, the fencing epoch, the due backlog, and whether the database
and the brain are reachable. It returns 503 when either is not, on leaders
and followers alike, because a follower must be able to take over. The
database is queried on every request. The brain check reflects the handshake
at start and then the last frame sent, so a follower, which sends no frames,
does not notice a brain that went away later.
``/metrics`` is the Prometheus text format of :mod:`z4j_scheduler.metrics`.

The server is off unless ``Z4J_SCHEDULER_HTTP_PORT`` is set, and binds to
``Z4J_SCHEDULER_HTTP_HOST`` (loopback by default).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from z4j_scheduler import metrics, store

logger = logging.getLogger(__name__)

# Seconds the backlog query may take before /readyz reports the database as unavailable.
DATABASE_TIMEOUT = 5.0


class HttpBindError(OSError):
    """The health endpoint's address cannot be bound; the message names it and the fix."""


@dataclass(frozen=True)
class LeaderView:
    """The scheduler state that ``/readyz`` reports, read on every request."""

    instance_id: str
    epoch: int | None
    brain_target: str
    brain_ok: bool


@dataclass(frozen=True)
class DatabaseView:
    ok: bool
    due_backlog: int | None = None
    error: str | None = None


def readiness(leader: LeaderView, database: DatabaseView) -> tuple[int, dict[str, Any]]:
    """Return the status code and JSON body of ``/readyz``."""
    ready = database.ok and leader.brain_ok
    database_check: dict[str, Any] = {"ok": database.ok}
    if database.ok:
        database_check["due_backlog"] = database.due_backlog
    else:
        database_check["error"] = database.error
    body = {
        "status": "ready" if ready else "unavailable",
        "instance_id": leader.instance_id,
        "role": "leader" if leader.epoch is not None else "follower",
        "epoch": leader.epoch,
        "checks": {
            "database": database_check,
            "brain": {"ok": leader.brain_ok, "target": leader.brain_target},
        },
    }
    return (200 if ready else 503), body


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HealthApp:
    """Builds the Starlette application from a view of the scheduler and a session factory."""

    def __init__(
        self,
        view: Callable[[], LeaderView],
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.view = view
        self.sessions = sessions
        self.clock = clock

    def app(self) -> Starlette:
        routes = [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        status, body = readiness(self.view(), await self.database())
        return JSONResponse(body, status_code=status)

    async def metrics(self, _request: Request) -> Response:
        await self.database()
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def database(self) -> DatabaseView:
        """Count the due backlog into its gauge; a failure or timeout reports the database down."""
        with anyio.move_on_after(DATABASE_TIMEOUT):
            try:
                backlog = await anyio.to_thread.run_sync(self._count_due, abandon_on_cancel=True)
            except SQLAlchemyError as error:
                return DatabaseView(ok=False, error=type(error).__name__)
            metrics.DUE_BACKLOG.set(backlog)
            return DatabaseView(ok=True, due_backlog=backlog)
        return DatabaseView(ok=False, error=f"no answer within {DATABASE_TIMEOUT:.0f} s")

    def _count_due(self) -> int:
        with self.sessions() as session:
            return store.count_due(session, self.clock())


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket, raising HttpBindError naming the address and the setting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise HttpBindError(
            f"invalid health endpoint address {host}:{port}: {error.strerror or error}; "
            "set Z4J_SCHEDULER_HTTP_PORT to a free port, or unset it to turn the endpoint off"
        ) from error
    sock.setblocking(False)
    return sock


class _ServerWithoutSignals(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM and SIGINT to the scheduler's own handler."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    """Serves the health application on an already bound socket until :meth:`stop`."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, log_level="warning", access_log=False
        )
        self._server = _ServerWithoutSignals(config)
        self._socket = sock

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def __repr__(self) -> str:
        host, port = self.address
        return f"<HealthServer http://{host}:{port}>"

    async def serve(self) -> None:
        host, port = self.address
        logger.info("health endpoint on http://%s:%d (/healthz, /readyz, /metrics)", host, port)
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._socket.close()

    def stop(self) -> None:
        self._server.should_exit = True
