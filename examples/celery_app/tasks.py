"""Tasks of the Celery example. Their names are ``examples.celery_app.tasks.<function>``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Task

from examples.celery_app.app import app
from examples.runlog import append_run, delete_old_reports, write_report

logger = logging.getLogger(__name__)


def _queue(task: Task) -> str | None:
    # A message routed by queue name carries that name as its routing key.
    delivery_info = task.request.delivery_info or {}
    routing_key: str | None = delivery_info.get("routing_key")
    return routing_key


@app.task(bind=True)
def record_run(self: Task, label: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Log this run with its arguments, task id and queue."""
    return append_run(label, args, kwargs, task_id=self.request.id, queue=_queue(self))


@app.task(bind=True)
def send_report(self: Task, name: str) -> str:
    """Write a summary of the run log to ``reports/NAME.txt``."""
    path = write_report(name, datetime.now(UTC))
    logger.info("report %s written to %s", name, path)
    append_run("send_report", (name,), {}, task_id=self.request.id, queue=_queue(self))
    return str(path)


@app.task(bind=True)
def cleanup(self: Task, days: float = 7) -> list[str]:
    """Delete reports older than ``days`` days."""
    removed = delete_old_reports(days, datetime.now(UTC))
    logger.info("cleanup removed %d report(s) older than %s day(s)", len(removed), days)
    append_run("cleanup", (), {"days": days}, task_id=self.request.id, queue=_queue(self))
    return removed
