"""Apply a declarative schedule file (TOML or JSON) to a project.

The file names a project and lists schedules by name; applying it creates the
missing ones, updates those whose stored values differ from the file (an
edit made through the API is undone) and, with ``prune``, deletes
declarative schedules no longer listed. A schedule created another way is
never taken over. Everything is validated before the transaction commits, so a file
with one bad schedule changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from z4j_brain_plugin.errors import ValidationError
from z4j_brain_plugin.models import Project, Schedule
from z4j_brain_plugin.schedules import DEFAULTS, ScheduleService, parse_fields, schedule_document

SOURCE = "declarative"


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def load_spec(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON spec file with ``project`` and a ``schedules`` list."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ValidationError("file", str(path), f"cannot read {path}: {error.strerror}") from error
    try:
        spec = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValidationError("file", str(path), f"invalid spec file {path}: {error}") from error
    schedules = spec.get("schedules") if isinstance(spec, dict) else None
    if not isinstance(schedules, list) or not all(isinstance(item, dict) for item in schedules):
        raise ValidationError(
            "schedules", None, f"invalid spec file {path}: 'schedules' must be a list of tables"
        )
    return spec


def apply_spec(
    session: Session,
    service: ScheduleService,
    project: Project,
    schedules: list[dict[str, Any]],
    *,
    prune: bool,
    actor: str,
    now: datetime,
) -> ApplyReport:
    report = ApplyReport()
    statement = select(Schedule).where(Schedule.project_id == project.id)
    existing = {row.name: row for row in session.scalars(statement)}
    listed = set()
    for position, body in enumerate(schedules):
        name = body.get("name")
        if not isinstance(name, str) or name in listed:
            raise ValidationError(
                f"schedules[{position}].name",
                name,
                f"invalid name {name!r}: each schedule needs a unique name",
            )
        listed.add(name)
        try:
            _apply_one(
                session, service, project, body, existing.get(name), report, actor=actor, now=now
            )
        except ValidationError as error:
            message = f"schedule {name!r} (schedules[{position}]): {error.message}"
            raise ValidationError(
                f"schedules[{position}].{error.field}", error.value, message
            ) from error
    if prune:
        for name, row in existing.items():
            if name not in listed and row.source == SOURCE:
                service.delete(session, row, actor=actor, now=now)
                report.deleted.append(name)
    return report


def _apply_one(
    session: Session,
    service: ScheduleService,
    project: Project,
    body: dict[str, Any],
    row: Schedule | None,
    report: ApplyReport,
    *,
    actor: str,
    now: datetime,
) -> None:
    # The file is the whole definition: a field it leaves out takes its
    # default, so removing a line from the file resets that field.
    definition = {**DEFAULTS, **body}
    digest = definition_hash(definition)
    if row is None:
        created = service.create(session, project, definition, actor=actor, source=SOURCE, now=now)
        created.source_hash = digest
        report.created.append(created.name)
        return
    if row.source != SOURCE:
        raise ValidationError(
            "name",
            row.name,
            f"a schedule named {row.name!r} exists and is managed by {row.source!r}; "
            "rename it in the file, or delete the existing schedule first",
        )
    if row.source_hash == digest and _matches(row, definition):
        report.unchanged.append(row.name)
        return
    service.update(session, row, definition, actor=actor, now=now)
    row.source_hash = digest
    report.updated.append(row.name)


def _matches(row: Schedule, definition: dict[str, Any]) -> bool:
    """Tell whether the stored schedule still has the file's values (an API edit changes them)."""
    document = schedule_document(row)
    fields = parse_fields(definition)
    fields.pop("start_at", None)
    return all(document.get(name) == value for name, value in fields.items())


def definition_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
