"""The benchmark database on PostgreSQL: create it, seed it with bulk SQL, read results.

Seeding uses ``INSERT ... SELECT FROM generate_series``, so 1,000,000 rows
take seconds and no REST call or ORM object is involved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.engine import make_url

from z4j_brain_plugin.api.auth import create_token
from z4j_brain_plugin.migrate import upgrade
from z4j_brain_plugin.models import Project, make_engine, make_session_factory

PROJECT = "bench"
TASK_NAME = "benchmarks.noop"
# Tries of the TRUNCATE that empties the tables between scenarios.
CLEAR_ATTEMPTS = 5


@dataclass(frozen=True)
class BenchDatabase:
    engine: Engine
    project_id: int
    operator_token: str


def recreate(url: str) -> BenchDatabase:
    """Drop and create the database named in ``url``, migrate it, add a project and a token."""
    parsed = make_url(url)
    admin = make_engine(
        parsed.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    engine = make_engine(url)
    upgrade(engine)
    return _with_project(engine)


def _with_project(engine: Engine) -> BenchDatabase:
    now = datetime.now().astimezone()
    with make_session_factory(engine, write=True).begin() as session:
        project = Project(slug=PROJECT, name="Benchmarks", created_at=now)
        session.add(project)
        session.flush()
        token = create_token(session, name="bench", role="operator", project=project, now=now)
        return BenchDatabase(engine, project.id, token)


_INSERT_SCHEDULES = text(
    """
    INSERT INTO schedules (
        project_id, name, engine, connection, kind, expression, timezone, start_at,
        task_name, args, kwargs, queue, catch_up, enabled, source, revision,
        next_run_at, total_runs, created_at, updated_at
    )
    SELECT :project_id, :prefix || g, 'celery', 'default', 'interval', :expression, 'UTC',
           CAST(:first AS timestamptz) + (g - 1) * CAST(:step AS interval),
           :task_name, CAST('["bench"]' AS json), CAST('{}' AS json), :queue, 'skip', true, 'bench', 1,
           CAST(:first AS timestamptz) + (g - 1) * CAST(:step AS interval), 0, now(), now()
    FROM generate_series(1, :count) AS g
    """
)


def seed_schedules(
    db: BenchDatabase,
    *,
    prefix: str,
    count: int,
    first: datetime,
    step: timedelta,
    period_seconds: int,
    queue: str,
) -> None:
    """Insert ``count`` interval schedules whose first slots are ``first``, ``first + step``, ...

    Each fires every ``period_seconds`` from its first slot, with the
    catch-up policy ``skip``, onto the Celery queue ``queue``.
    """
    parameters = {
        "project_id": db.project_id,
        "prefix": prefix,
        "expression": str(period_seconds),
        "first": first,
        "step": step,
        "task_name": TASK_NAME,
        "queue": queue,
        "count": count,
    }
    with db.engine.begin() as connection:
        connection.execute(_INSERT_SCHEDULES, parameters)
    analyze(db)


_INSERT_FIRES = text(
    """
    INSERT INTO schedule_fires (
        id, schedule_id, scheduled_for, slot, fired_at, trigger, status, payload,
        task_id, attempts, last_error, next_attempt_at, dispatched_at, epoch
    )
    SELECT CAST(CAST(md5(:salt || g) AS uuid) AS text), :schedule_id,
           CAST(:first AS timestamptz) + g * interval '1 second',
           CAST(:first AS timestamptz) + g * interval '1 second',
           CAST(:first AS timestamptz) + g * interval '1 second',
           'schedule',
           CASE WHEN g % 1000 = 0 THEN 'failed' ELSE 'dispatched' END,
           CAST(:payload AS json),
           CASE WHEN g % 1000 = 0 THEN NULL ELSE CAST(CAST(md5(:salt || g) AS uuid) AS text) END,
           1,
           CASE WHEN g % 1000 = 0 THEN 'celery dispatch failed: queue rejected the message' END,
           NULL,
           CASE WHEN g % 1000 = 0 THEN NULL ELSE CAST(:first AS timestamptz) + g * interval '1 second' END,
           1
    FROM generate_series(1, :count) AS g
    """
)

FIRE_PAYLOAD = '{"engine": "celery", "connection": "default", "task_name": "benchmarks.noop", "args": ["bench"], "kwargs": {}, "queue": "history"}'


def seed_fire_history(db: BenchDatabase, schedule_id: int, count: int, first: datetime) -> None:
    """Insert ``count`` past fires of one schedule, one a second from ``first``; every 1000th failed."""
    parameters = {
        "salt": f"{schedule_id}/",
        "schedule_id": schedule_id,
        "first": first,
        "payload": FIRE_PAYLOAD,
        "count": count,
    }
    with db.engine.begin() as connection:
        connection.execute(_INSERT_FIRES, parameters)
    analyze(db)


def analyze(db: BenchDatabase) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE schedules"))
        connection.execute(text("ANALYZE schedule_fires"))


def clear_schedules(db: BenchDatabase) -> None:
    """Delete every schedule and fire, keeping the project, the token and the leader row.

    Schedule ids are not reused, as in production: the scheduler caches parsed
    schedules by id and revision. TRUNCATE may deadlock with a frame the
    brain is recording, which PostgreSQL resolves by failing one side, so it
    is tried again.
    """
    for attempt in range(1, CLEAR_ATTEMPTS + 1):
        try:
            with db.engine.begin() as connection:
                connection.execute(text("TRUNCATE schedule_fires, schedules"))
                connection.execute(text("DELETE FROM audit_log"))
            break
        except OperationalError:
            if attempt == CLEAR_ATTEMPTS:
                raise
            time.sleep(0.5)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE schedules"))
        connection.execute(text("VACUUM ANALYZE schedule_fires"))


def execute(db: BenchDatabase, sql: str, **parameters: object) -> None:
    with db.engine.begin() as connection:
        connection.execute(text(sql), parameters)


def count(db: BenchDatabase, sql: str, **parameters: object) -> int:
    """Return the integer a one-value query returns, 0 for NULL."""
    return int(scalar(db, sql, **parameters) or 0)


def scalar(db: BenchDatabase, sql: str, **parameters: object) -> Any:
    with db.engine.connect() as connection:
        return connection.execute(text(sql), parameters).scalar()


def fire_rows(db: BenchDatabase) -> list[tuple[str, datetime, datetime | None, int, str]]:
    """Return (id, scheduled_for, dispatched_at, epoch, status) of every fire."""
    sql = "SELECT id, scheduled_for, dispatched_at, epoch, status FROM schedule_fires"
    with db.engine.connect() as connection:
        return [(row[0], row[1], row[2], row[3], row[4]) for row in connection.execute(text(sql))]


def leader(db: BenchDatabase) -> tuple[int, str | None]:
    with db.engine.connect() as connection:
        epoch, leader_id = connection.execute(
            text("SELECT epoch, leader_id FROM scheduler_leader WHERE id = 1")
        ).one()
        return int(epoch), leader_id
