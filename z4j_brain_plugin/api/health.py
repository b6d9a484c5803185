"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from z4j_brain_plugin import metrics
from z4j_brain_plugin.api.routes import brain_of
from z4j_brain_plugin.models import Fire, LeaderState, Schedule


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    brain = brain_of(request)
    now = brain.clock()

    def work(session: Session) -> dict[str, Any]:
        epoch, leader = session.execute(
            select(LeaderState.epoch, LeaderState.leader_id).where(LeaderState.id == 1)
        ).one()
        due = select(func.count()).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        waiting = select(func.count()).where(
            Fire.status.in_(("pending", "failed")), Fire.next_attempt_at.is_not(None)
        )
        return {
            "epoch": epoch,
            "leader": leader,
            "due_backlog": session.scalar(due),
            "outbox_waiting": session.scalar(waiting),
        }

    checks: dict[str, Any] = {}
    ready = True
    try:
        checks["database"] = {"ok": True, **await brain.read(work)}
        metrics.LEADER_EPOCH.set(checks["database"]["epoch"])
    except SQLAlchemyError as error:
        ready = False
        checks["database"] = {"ok": False, "error": str(error.__class__.__name__)}
    supervisor = brain.components.get("scheduler")
    if supervisor is not None:
        snapshot = supervisor.snapshot()
        child_ok = snapshot["state"] != "gave_up"
        metrics.SCHEDULER_CHILD_UP.set(1 if snapshot["state"] == "running" else 0)
        checks["scheduler"] = {"ok": child_ok, **snapshot}
        ready = ready and child_ok
    if "grpc" in brain.components:
        checks["grpc"] = {"ok": True, "port": brain.components["grpc"].port}
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]
