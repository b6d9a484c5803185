"""Tasks of the taskiq example.

taskiq names each task ``MODULE:FUNCTION`` by default, so the task names that
z4j-scheduler sends are ``examples.taskiq_app.tasks:record_run`` and so on.
Start the worker with
``taskiq worker examples.taskiq_app.app:broker examples.taskiq_app.tasks``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from taskiq import Context, TaskiqDepends

from examples.runlog import append_run, delete_old_reports, write_report
from examples.taskiq_app.app import broker

__all__ = ["broker", "cleanup", "record_run", "send_report"]

logger = logging.getLogger(__name__)

TaskContext = Annotated[Context, TaskiqDepends()]


def _queue(context: Context) -> str | None:
    # A message sent to another queue than the broker's own carries the
    # queue_name label, which is how taskiq-redis routes it.
    label = context.message.labels.get("queue_name")
    queue: str | None = label or getattr(context.broker, "queue_name", None)
    return queue


@broker.task
async def record_run(label: str, *args: Any, context: TaskContext, **kwargs: Any) -> dict[str, Any]:
    """Log this run with its arguments, task id and queue."""
    return append_run(label, args, kwargs, task_id=context.message.task_id, queue=_queue(context))


@broker.task
async def send_report(name: str, context: TaskContext) -> str:
    """Write a summary of the run log to ``reports/NAME.txt``."""
    path = write_report(name, datetime.now(UTC))
    logger.info("report %s written to %s", name, path)
    append_run("send_report", (name,), {}, task_id=context.message.task_id, queue=_queue(context))
    return str(path)


@broker.task
async def cleanup(context: TaskContext, days: float = 7) -> list[str]:
    """Delete reports older than ``days`` days."""
    removed = delete_old_reports(days, datetime.now(UTC))
    logger.info("cleanup removed %d report(s) older than %s day(s)", len(removed), days)
    queue = _queue(context)
    append_run("cleanup", (), {"days": days}, task_id=context.message.task_id, queue=queue)
    return removed
