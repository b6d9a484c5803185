"""REST API: projects, schedules, run-now and fire history under ``/api/v1``."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from z4j_brain_plugin.api.auth import Principal, authenticate
from z4j_brain_plugin.brain import Brain
from z4j_brain_plugin.errors import NotFoundError, ValidationError
from z4j_brain_plugin.models import FIRE_STATUSES, Fire, Project, Schedule
from z4j_brain_plugin.schedules import schedule_document
from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import parse_instant

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_PAGE = 1000
# Schedules per bulk create request; larger imports take several requests.
MAX_BULK = 10_000


def brain_of(request: Request) -> Brain:
    brain: Brain = request.app.state.brain
    return brain


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValidationError("body", None, f"invalid body: not JSON ({error})") from error


def principal(session: Session, request: Request) -> Principal:
    return authenticate(session, request.headers.get("authorization"))


def project_by_slug(session: Session, slug: str) -> Project:
    project = session.scalar(select(Project).where(Project.slug == slug))
    if project is None:
        raise NotFoundError(f"project {slug!r} not found")
    return project


def schedule_in(session: Session, project: Project, schedule_id: str) -> Schedule:
    schedule = session.get(Schedule, int(schedule_id)) if schedule_id.isdigit() else None
    if schedule is None or schedule.project_id != project.id:
        raise NotFoundError(f"schedule {schedule_id} not found in project {project.slug!r}")
    return schedule


def project_document(project: Project) -> dict[str, Any]:
    return {"id": project.id, "slug": project.slug, "name": project.name}


def fire_document(fire: Any) -> dict[str, Any]:
    """Return a fire as the REST API shows it, from a ``Fire`` or a row of its columns."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "id": fire.id,
        "schedule_id": fire.schedule_id,
        "scheduled_for": iso(fire.scheduled_for),
        "fired_at": iso(fire.fired_at),
        "trigger": fire.trigger,
        "status": fire.status,
        "task_id": fire.task_id,
        "attempts": fire.attempts,
        "last_error": fire.last_error,
        "dispatched_at": iso(fire.dispatched_at),
        "epoch": fire.epoch,
    }


# Projects


async def list_projects(request: Request) -> Response:
    def work(session: Session) -> list[dict[str, Any]]:
        who = principal(session, request)
        statement = select(Project).order_by(Project.slug)
        if who.project_id is not None:
            statement = statement.where(Project.id == who.project_id)
        return [project_document(project) for project in session.scalars(statement)]

    return JSONResponse({"projects": await brain_of(request).read(work)})


async def create_project(request: Request) -> Response:
    body = await json_body(request)
    brain = brain_of(request)

    def work(session: Session) -> dict[str, Any]:
        principal(session, request).require("admin")
        if principal(session, request).project_id is not None:
            raise ValidationError("project", None, "a project-bound token cannot create projects")
        slug, name = _project_fields(body)
        if session.scalar(select(Project.id).where(Project.slug == slug)) is not None:
            raise ValidationError(
                "slug", slug, f"invalid slug {slug!r}: a project with this slug exists"
            )
        project = Project(slug=slug, name=name, created_at=brain.clock())
        session.add(project)
        session.flush()
        return project_document(project)

    return JSONResponse(await brain.write(work), status_code=201)


async def get_project(request: Request) -> Response:
    def work(session: Session) -> dict[str, Any]:
        project = project_by_slug(session, request.path_params["slug"])
        principal(session, request).require("viewer", project)
        return project_document(project)

    return JSONResponse(await brain_of(request).read(work))


def _project_fields(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ValidationError("body", body, "invalid body: send a JSON object with slug and name")
    slug = body.get("slug")
    if not isinstance(slug, str) or not SLUG.match(slug):
        raise ValidationError(
            "slug", slug, f"invalid slug {slug!r}: use 1-63 lowercase letters, digits and dashes"
        )
    name = body.get("name", slug)
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise ValidationError("name", name, f"invalid name {name!r}: use 1-200 characters")
    return slug, name


# Schedules


async def list_schedules(request: Request) -> Response:
    limit, offset = _page(request)

    def work(session: Session) -> dict[str, Any]:
        project = project_by_slug(session, request.path_params["slug"])
        principal(session, request).require("viewer", project)
        statement = (
            select(Schedule)
            .where(Schedule.project_id == project.id)
            .order_by(Schedule.id)
            .limit(limit)
            .offset(offset)
        )
        rows = [schedule_document(row) for row in session.scalars(statement)]
        return {"schedules": rows, "limit": limit, "offset": offset}

    return JSONResponse(await brain_of(request).read(work))


async def create_schedule(request: Request) -> Response:
    body = await json_body(request)
    brain = brain_of(request)

    def work(session: Session) -> dict[str, Any]:
        project = project_by_slug(session, request.path_params["slug"])
        who = principal(session, request)
        who.require("operator", project)
        schedule = brain.service.create(
            session, project, body, actor=who.name, source="api", now=brain.clock()
        )
        return schedule_document(schedule)

    try:
        document = await brain.write(work)
    except IntegrityError as error:
        raise ValidationError(
            "name",
            body.get("name"),
            f"invalid name {body.get('name')!r}: a schedule with this name exists in the project",
        ) from error
    return JSONResponse(document, status_code=201)


async def create_schedules_bulk(request: Request) -> Response:
    """Create up to MAX_BULK schedules in one transaction: all of them, or none and a 422."""
    items = _bulk_items(await json_body(request))
    brain = brain_of(request)

    def work(session: Session) -> dict[str, Any]:
        project = project_by_slug(session, request.path_params["slug"])
        who = principal(session, request)
        who.require("operator", project)
        documents = brain.service.create_many(
            session, project, items, actor=who.name, source="api", now=brain.clock()
        )
        return {"schedules": documents}

    try:
        document = await brain.write(work)
    except IntegrityError as error:
        raise ValidationError(
            "schedules",
            None,
            "invalid schedules: a schedule with one of these names was created meanwhile; "
            "nothing was written, send the request again",
        ) from error
    return JSONResponse(document, status_code=201)


def _bulk_items(body: Any) -> list[Any]:
    items = body.get("schedules") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise ValidationError(
            "schedules",
            None,
            "invalid body: send a JSON list of schedules, or an object with a 'schedules' list",
        )
    if not 1 <= len(items) <= MAX_BULK:
        raise ValidationError(
            "schedules",
            len(items),
            f"invalid schedules: {len(items)} items; send 1 to {MAX_BULK} per request",
        )
    return items


def _schedule_action(
    role: str, action: Callable[[Brain, Session, Schedule, Principal, Any], dict[str, Any] | None]
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        body = await json_body(request) if request.method == "PATCH" else None
        brain = brain_of(request)

        def work(session: Session) -> dict[str, Any] | None:
            project = project_by_slug(session, request.path_params["slug"])
            who = principal(session, request)
            who.require(role, project)
            schedule = schedule_in(session, project, request.path_params["schedule_id"])
            return action(brain, session, schedule, who, body)

        runner = brain.read if role == "viewer" else brain.write
        try:
            document = await runner(work)
        except IntegrityError as error:
            # Only the (project, name) constraint can fail on an edit.
            name = body.get("name") if isinstance(body, dict) else None
            raise ValidationError(
                "name",
                name,
                f"invalid name {name!r}: a schedule with this name exists in the project",
            ) from error
        if request.url.path.endswith("/run-now"):
            brain.outbox.wake()
            return JSONResponse(document, status_code=202)
        if document is None:
            return Response(status_code=204)
        return JSONResponse(document)

    return endpoint


def _get(
    brain: Brain, session: Session, schedule: Schedule, who: Principal, body: Any
) -> dict[str, Any]:
    return schedule_document(schedule)


def _update(
    brain: Brain, session: Session, schedule: Schedule, who: Principal, body: Any
) -> dict[str, Any]:
    return schedule_document(
        brain.service.update(session, schedule, body, actor=who.name, now=brain.clock())
    )


def _enable(
    brain: Brain, session: Session, schedule: Schedule, who: Principal, body: Any
) -> dict[str, Any]:
    updated = brain.service.set_enabled(session, schedule, True, actor=who.name, now=brain.clock())
    return schedule_document(updated)


def _disable(
    brain: Brain, session: Session, schedule: Schedule, who: Principal, body: Any
) -> dict[str, Any]:
    updated = brain.service.set_enabled(session, schedule, False, actor=who.name, now=brain.clock())
    return schedule_document(updated)


def _delete(brain: Brain, session: Session, schedule: Schedule, who: Principal, body: Any) -> None:
    brain.service.delete(session, schedule, actor=who.name, now=brain.clock())


def _run_now(
    brain: Brain, session: Session, schedule: Schedule, who: Principal, body: Any
) -> dict[str, Any]:
    return fire_document(
        brain.service.run_now(session, schedule, actor=who.name, now=brain.clock())
    )


# Fire history


_PAGE_COLUMNS = (
    Fire.id,
    Fire.schedule_id,
    Fire.scheduled_for,
    Fire.fired_at,
    Fire.trigger,
    Fire.status,
    Fire.task_id,
    Fire.attempts,
    Fire.last_error,
    Fire.dispatched_at,
    Fire.epoch,
)


async def list_fires(request: Request) -> Response:
    """Return one page of fires, newest first; ``next_cursor`` fetches the next page.

    Pages are keyed by (scheduled_for, id) and read from ``ix_fires_history``,
    so a page deep in a long history costs as much as the first one.
    """
    filters = _fire_filters(request)
    limit, _offset = _page(request)
    after = _page_cursor(request.query_params.get("cursor"))

    def work(session: Session) -> dict[str, Any]:
        project = project_by_slug(session, request.path_params["slug"])
        principal(session, request).require("viewer", project)
        schedule = schedule_in(session, project, request.path_params["schedule_id"])
        statement = select(*_PAGE_COLUMNS).where(Fire.schedule_id == schedule.id, *filters)
        if after is not None:
            statement = statement.where(tuple_(Fire.scheduled_for, Fire.id) < tuple_(*after))
        statement = statement.order_by(Fire.scheduled_for.desc(), Fire.id.desc()).limit(limit + 1)
        rows = list(session.execute(statement))
        more = len(rows) > limit
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1].scheduled_for, page[-1].id) if more and page else None
        return {
            "fires": [fire_document(row) for row in page],
            "limit": limit,
            "next_cursor": next_cursor,
        }

    return JSONResponse(await brain_of(request).read(work))


def _encode_cursor(scheduled_for: datetime, fire_id: str) -> str:
    raw = f"{scheduled_for.isoformat()}|{fire_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        stamp, _, fire_id = text.partition("|")
        scheduled_for = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise ValidationError(
            "cursor",
            raw,
            f"invalid cursor {raw!r}: pass the next_cursor of the previous page unchanged",
        ) from error
    if not fire_id or scheduled_for.tzinfo is None:
        raise ValidationError(
            "cursor",
            raw,
            f"invalid cursor {raw!r}: pass the next_cursor of the previous page unchanged",
        )
    return scheduled_for, fire_id


def _fire_filters(request: Request) -> list[Any]:
    filters: list[Any] = []
    status = request.query_params.get("status")
    if status is not None:
        if status not in FIRE_STATUSES:
            raise ValidationError(
                "status",
                status,
                f"invalid status {status!r}: use one of {', '.join(FIRE_STATUSES)}",
            )
        filters.append(Fire.status == status)
    for name, compare in (
        ("since", Fire.scheduled_for.__ge__),
        ("until", Fire.scheduled_for.__lt__),
    ):
        raw = request.query_params.get(name)
        if raw is not None:
            filters.append(compare(_instant(name, raw)))
    return filters


def _instant(name: str, raw: str) -> datetime:
    try:
        return parse_instant(raw, name)
    except ScheduleError as error:
        raise ValidationError(name, raw, str(error)) from error


def _page(request: Request) -> tuple[int, int]:
    values = []
    for name, default, top in (("limit", 100, MAX_PAGE), ("offset", 0, 10**9)):
        raw = request.query_params.get(name, str(default))
        if not raw.isdigit() or not 0 <= int(raw) <= top:
            raise ValidationError(
                name, raw, f"invalid {name} {raw!r}: use a whole number from 0 to {top}"
            )
        values.append(int(raw))
    return values[0], values[1]


SCHEDULE = "/api/v1/projects/{slug}/schedules/{schedule_id}"

ROUTES = [
    Route("/api/v1/projects", list_projects, methods=["GET"]),
    Route("/api/v1/projects", create_project, methods=["POST"]),
    Route("/api/v1/projects/{slug}", get_project, methods=["GET"]),
    Route("/api/v1/projects/{slug}/schedules", list_schedules, methods=["GET"]),
    Route("/api/v1/projects/{slug}/schedules", create_schedule, methods=["POST"]),
    Route("/api/v1/projects/{slug}/schedules:bulk", create_schedules_bulk, methods=["POST"]),
    Route(SCHEDULE, _schedule_action("viewer", _get), methods=["GET"]),
    Route(SCHEDULE, _schedule_action("operator", _update), methods=["PATCH"]),
    Route(SCHEDULE, _schedule_action("operator", _delete), methods=["DELETE"]),
    Route(SCHEDULE + "/enable", _schedule_action("operator", _enable), methods=["POST"]),
    Route(SCHEDULE + "/disable", _schedule_action("operator", _disable), methods=["POST"]),
    Route(SCHEDULE + "/run-now", _schedule_action("operator", _run_now), methods=["POST"]),
    Route(SCHEDULE + "/fires", list_fires, methods=["GET"]),
]
