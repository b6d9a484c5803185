"""Create, edit, enable, disable, delete and run schedules.

Every input is validated with the scheduler's semantics layer before anything
is written, and an invalid one raises ValidationError naming the field and
the value. Each change is written to the audit log and bumps the schedule's
revision, so the brain rejects a fire planned against the old definition and
the leader re-plans.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from z4j_brain_plugin import audit
from z4j_brain_plugin.errors import ValidationError
from z4j_brain_plugin.fires import fire_payload
from z4j_brain_plugin.models import ENGINES, Fire, Project, Schedule, bulk_insert, reserve_ids
from z4j_brain_plugin.settings import ENGINE_URL_SETTINGS
from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import Schedule as Timing
from z4j_scheduler.semantics import parse_instant, parse_policy, parse_schedule

# Largest JSON encoding of args plus kwargs, in bytes; brokers and workers
# handle task payloads, not documents.
MAX_PAYLOAD_BYTES = 64 * 1024
TIMING_FIELDS = ("kind", "expression", "timezone", "start_at")
_BEFORE_ANY_ONE_SHOT = datetime(1900, 1, 1, tzinfo=UTC)


class ScheduleFields(BaseModel):
    """Fields a client may set; all optional so the same model serves updates."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    engine: Literal["celery", "rq", "dramatiq", "huey", "arq", "taskiq"] | None = None
    connection: str | None = Field(default=None, min_length=1, max_length=64)
    kind: Literal["cron", "interval", "one_shot", "solar"] | None = None
    expression: str | None = Field(default=None, min_length=1, max_length=500)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    start_at: str | None = None
    task_name: str | None = Field(default=None, min_length=1, max_length=500)
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    queue: str | None = Field(default=None, max_length=200)
    catch_up: str | None = None
    enabled: bool | None = None


# Fields a client may set to null; the others need a value when present.
NULLABLE_FIELDS = frozenset({"queue", "start_at"})
REQUIRED_ON_CREATE = ("name", "engine", "kind", "expression", "task_name")
DEFAULTS: dict[str, Any] = {
    "connection": "default",
    "timezone": "UTC",
    "start_at": None,
    "args": [],
    "kwargs": {},
    "queue": None,
    "catch_up": "skip",
    "enabled": True,
}


@dataclass(frozen=True)
class ScheduleService:
    """Schedule operations inside the caller's write transaction."""

    # Configured broker connections as (engine, connection name).
    connections: Collection[tuple[str, str]]
    secret: bytes

    def create(
        self,
        session: Session,
        project: Project,
        body: Mapping[str, Any],
        *,
        actor: str,
        source: str,
        now: datetime,
    ) -> Schedule:
        schedule = Schedule(**self.build_values(project, body, source=source, now=now))
        session.add(schedule)
        session.flush()
        self._audit(session, actor, "schedule.create", schedule, None, now)
        return schedule

    def create_many(
        self,
        session: Session,
        project: Project,
        bodies: Sequence[Any],
        *,
        actor: str,
        source: str,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Validate every body, then insert all schedules and their audit entries, or nothing.

        Returns the REST document of each new schedule, in order. A
        ValidationError names the first invalid item by index, as
        ``schedules[INDEX].FIELD``. Names must be unique within the list and
        in the project.
        """
        timings: dict[tuple[Any, ...], Timing] = {}
        table = cast(Table, Schedule.__table__)
        # Plain rows, not ORM objects, in one statement: an ORM flush of
        # thousands of objects spends most of its time building and parsing
        # one huge statement, and each object costs more to build than a row.
        empty = dict.fromkeys(column.key for column in table.columns)
        rows = [
            {**empty, **self._build_item(project, index, body, source, now, timings)}
            for index, body in enumerate(bodies)
        ]
        schedules = [SimpleNamespace(**row) for row in rows]
        _check_unique_names(session, project, schedules)
        ids = reserve_ids(session, "schedules", len(rows))
        for schedule_id, row, schedule in zip(ids, rows, schedules, strict=True):
            row["id"] = schedule.id = schedule_id
        bulk_insert(session, table, rows)
        entries = [
            audit.AuditRecord(
                at=now,
                actor=actor,
                action="schedule.create",
                target=f"schedule:{schedule.id}",
                before=None,
                after=schedule_document(schedule),
            )
            for schedule in schedules
        ]
        audit.append_many(session, self.secret, entries)
        return [entry.after for entry in entries if entry.after is not None]

    def build_values(
        self,
        project: Project,
        body: Mapping[str, Any],
        *,
        source: str,
        now: datetime,
        timings: dict[tuple[Any, ...], Timing] | None = None,
    ) -> dict[str, Any]:
        """Validate ``body`` and return the column values of the new schedule with its first cursor.

        ``timings`` caches parsed timings by (kind, expression, zone, anchor)
        across the items of one bulk request, which often repeat them.
        """
        fields = parse_fields(body)
        _require(fields, REQUIRED_ON_CREATE)
        values = {**DEFAULTS, **fields}
        self._check_engine(values["engine"], values["connection"])
        start_at = _anchor(values, now)
        key = (values["kind"], values["expression"], values["timezone"], start_at)
        timing = timings.get(key) if timings is not None else None
        if timing is None:
            timing = _timing(*key)
            if timings is not None:
                timings[key] = timing
        catch_up = _policy(values["catch_up"])
        _check_payload(values["args"], values["kwargs"])
        return {
            "project_id": project.id,
            "name": values["name"],
            "engine": values["engine"],
            "connection": values["connection"],
            "kind": values["kind"],
            "expression": values["expression"],
            "timezone": values["timezone"],
            "start_at": start_at,
            "task_name": values["task_name"],
            "args": values["args"],
            "kwargs": values["kwargs"],
            "queue": values["queue"],
            "catch_up": catch_up,
            "enabled": values["enabled"],
            "source": source,
            "revision": 1,
            "total_runs": 0,
            "next_run_at": initial_cursor(timing, values["kind"], catch_up, now),
            "created_at": now,
            "updated_at": now,
        }

    def _build_item(
        self,
        project: Project,
        index: int,
        body: Any,
        source: str,
        now: datetime,
        timings: dict[tuple[Any, ...], Timing],
    ) -> dict[str, Any]:
        try:
            return self.build_values(project, body, source=source, now=now, timings=timings)
        except ValidationError as error:
            raise ValidationError(
                f"schedules[{index}].{error.field}",
                error.value,
                f"schedules[{index}]: {error.message}",
            ) from error

    def update(
        self,
        session: Session,
        schedule: Schedule,
        body: Mapping[str, Any],
        *,
        actor: str,
        now: datetime,
    ) -> Schedule:
        fields = parse_fields(body)
        before = schedule_document(schedule)
        merged = {**before, **fields}
        self._check_engine(merged["engine"], merged["connection"])
        timing_changed = any(name in fields for name in TIMING_FIELDS)
        start_at = (
            _anchor(merged, now)
            if "start_at" in fields or merged["kind"] != schedule.kind
            else schedule.start_at
        )
        if merged["kind"] == "interval" and start_at is None:
            start_at = now
        timing = _timing(merged["kind"], merged["expression"], merged["timezone"], start_at)
        catch_up = _policy(merged["catch_up"])
        _check_payload(merged["args"], merged["kwargs"])
        for name in (
            "name",
            "engine",
            "connection",
            "kind",
            "expression",
            "timezone",
            "task_name",
            "args",
            "kwargs",
            "queue",
        ):
            setattr(schedule, name, merged[name])
        schedule.start_at = start_at
        schedule.catch_up = catch_up
        was_enabled = schedule.enabled
        schedule.enabled = merged["enabled"]
        if timing_changed or (schedule.enabled and not was_enabled):
            schedule.next_run_at = initial_cursor(timing, schedule.kind, catch_up, now)
        self._bump(schedule, now)
        self._audit(session, actor, "schedule.update", schedule, before, now)
        return schedule

    def set_enabled(
        self, session: Session, schedule: Schedule, enabled: bool, *, actor: str, now: datetime
    ) -> Schedule:
        return self.update(session, schedule, {"enabled": enabled}, actor=actor, now=now)

    def delete(self, session: Session, schedule: Schedule, *, actor: str, now: datetime) -> None:
        before = schedule_document(schedule)
        session.delete(schedule)
        session.flush()
        audit.append(
            session,
            self.secret,
            actor=actor,
            action="schedule.delete",
            target=f"schedule:{before['id']}",
            before=before,
            after=None,
            at=now,
        )

    def run_now(self, session: Session, schedule: Schedule, *, actor: str, now: datetime) -> Fire:
        """Record a manual fire; the outbox dispatches it after commit."""
        self._check_engine(schedule.engine, schedule.connection)
        fire = Fire(
            id=str(uuid.uuid4()),
            schedule_id=schedule.id,
            scheduled_for=now,
            slot=None,
            fired_at=now,
            trigger="manual",
            status="pending",
            payload=fire_payload(schedule),
            engine=schedule.engine,
            connection=schedule.connection,
            attempts=0,
            next_attempt_at=now,
            epoch=0,
        )
        session.add(fire)
        session.flush()
        audit.append(
            session,
            self.secret,
            actor=actor,
            action="schedule.run_now",
            target=f"schedule:{schedule.id}",
            before=None,
            after={"fire_id": fire.id},
            at=now,
        )
        return fire

    def _check_engine(self, engine: str, connection: str) -> None:
        if (engine, connection) in self.connections:
            return
        named = sorted(name for known, name in self.connections if known == engine)
        if not named:
            setting = ENGINE_URL_SETTINGS[engine].upper()
            raise ValidationError(
                "engine",
                engine,
                f"invalid engine {engine!r}: no broker is configured for it on this brain; "
                f"set Z4J_{setting} and restart",
            )
        raise ValidationError(
            "connection",
            connection,
            f"invalid connection {connection!r}: {engine} has the connections {', '.join(named)}; "
            "add others to Z4J_CONNECTIONS",
        )

    def _bump(self, schedule: Schedule, now: datetime) -> None:
        schedule.revision += 1
        schedule.updated_at = now

    def _audit(
        self,
        session: Session,
        actor: str,
        action: str,
        schedule: Schedule,
        before: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        audit.append(
            session,
            self.secret,
            actor=actor,
            action=action,
            target=f"schedule:{schedule.id}",
            before=before,
            after=schedule_document(schedule),
            at=now,
        )


def _check_unique_names(session: Session, project: Project, schedules: Sequence[Any]) -> None:
    seen: dict[str, int] = {}
    for index, schedule in enumerate(schedules):
        if schedule.name in seen:
            raise ValidationError(
                f"schedules[{index}].name",
                schedule.name,
                f"schedules[{index}]: invalid name {schedule.name!r}: schedules[{seen[schedule.name]}] has the same name",
            )
        seen[schedule.name] = index
    statement = select(Schedule.name).where(
        Schedule.project_id == project.id, Schedule.name.in_(seen)
    )
    taken = set(session.scalars(statement))
    for index, schedule in enumerate(schedules):
        if schedule.name in taken:
            raise ValidationError(
                f"schedules[{index}].name",
                schedule.name,
                f"schedules[{index}]: invalid name {schedule.name!r}: a schedule with this name exists in the project",
            )


def parse_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a JSON body against ScheduleFields; return only the fields it set."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", body, "invalid body: send a JSON object of schedule fields")
    try:
        model = ScheduleFields.model_validate(body)
    except PydanticValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        value = first.get("input")
        raise ValidationError(field, value, f"invalid {field} {value!r}: {first['msg']}") from error
    fields = model.model_dump(exclude_unset=True)
    for name, value in fields.items():
        if value is None and name not in NULLABLE_FIELDS:
            raise ValidationError(
                name, None, f"invalid {name} null: give a value, or leave the field out"
            )
    return fields


def initial_cursor(timing: Timing, kind: str, catch_up: str, now: datetime) -> datetime | None:
    """Return the first slot to fire for a new or re-timed schedule.

    A one-shot in the past fires at once when its policy fires missed slots
    and is rejected otherwise.
    """
    if kind != "one_shot":
        return timing.next_after(now)
    instant = timing.next_after(_BEFORE_ANY_ONE_SHOT)
    assert instant is not None
    if instant > now:
        return instant
    if catch_up == "skip":
        raise ValidationError(
            "expression",
            timing.expression,
            f"invalid expression {timing.expression!r}: the one-shot instant is in the past; "
            "give a future instant, or set catch_up to 'fire_one_missed' to fire it at once",
        )
    return instant


def schedule_document(schedule: Schedule | SimpleNamespace) -> dict[str, Any]:
    """Return the schedule as the REST API shows it."""
    return {
        "id": schedule.id,
        "project_id": schedule.project_id,
        "name": schedule.name,
        "engine": schedule.engine,
        "connection": schedule.connection,
        "kind": schedule.kind,
        "expression": schedule.expression,
        "timezone": schedule.timezone,
        "start_at": _iso(schedule.start_at),
        "task_name": schedule.task_name,
        "args": list(schedule.args),
        "kwargs": dict(schedule.kwargs),
        "queue": schedule.queue,
        "catch_up": schedule.catch_up,
        "enabled": schedule.enabled,
        "source": schedule.source,
        "revision": schedule.revision,
        "last_run_at": _iso(schedule.last_run_at),
        "next_run_at": _iso(schedule.next_run_at),
        "total_runs": schedule.total_runs,
        "created_at": _iso(schedule.created_at),
        "updated_at": _iso(schedule.updated_at),
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def _require(fields: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if fields.get(name) is None:
            raise ValidationError(
                name, None, f"missing {name}: it is required to create a schedule"
            )


def _anchor(values: Mapping[str, Any], now: datetime) -> datetime | None:
    raw = values.get("start_at")
    if isinstance(raw, datetime):
        return raw
    if raw is not None:
        try:
            return parse_instant(raw, "start_at")
        except ScheduleError as error:
            raise ValidationError("start_at", raw, str(error)) from error
    return now if values["kind"] == "interval" else None


def _timing(kind: str, expression: str, timezone: str, start_at: datetime | None) -> Timing:
    try:
        return parse_schedule(kind, expression, timezone, start_at)
    except ScheduleError as error:
        raise ValidationError(error.field, error.value, str(error)) from error


def _policy(value: str) -> str:
    try:
        return str(parse_policy(value).value)
    except ScheduleError as error:
        raise ValidationError("catch_up", value, str(error)) from error


def _check_payload(args: list[Any], kwargs: dict[str, Any]) -> None:
    size = len(json.dumps([args, kwargs]))
    if size > MAX_PAYLOAD_BYTES:
        raise ValidationError(
            "args",
            f"<{size} bytes>",
            f"invalid args and kwargs: {size} bytes of JSON exceed the {MAX_PAYLOAD_BYTES}-byte limit; "
            "pass a reference (an id or a URL) instead of the data",
        )


__all__ = ["ENGINES", "ScheduleService", "initial_cursor", "parse_fields", "schedule_document"]
