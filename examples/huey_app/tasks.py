"""Tasks of the Huey example. Start the consumer on ``examples.huey_app.tasks.huey``.

Huey registers each task as ``examples.huey_app.tasks.<function>``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from huey.api import Task

from examples.huey_app.app import huey
from examples.runlog import append_run, delete_old_reports, write_report

__all__ = ["cleanup", "huey", "record_run", "send_report"]

logger = logging.getLogger(__name__)


def _task_id(task: Task | None) -> str | None:
    return None if task is None else str(task.id)


# context=True makes Huey pass the running task as the ``task`` keyword, so a
# call's own keyword argument named ``task`` is not supported.
@huey.task(context=True)
def record_run(label: str, *args: Any, task: Task | None = None, **kwargs: Any) -> dict[str, Any]:
    """Log this run with its arguments, task id and Huey name."""
    return append_run(label, args, kwargs, task_id=_task_id(task), queue=huey.name)


@huey.task(context=True)
def send_report(name: str, task: Task | None = None) -> str:
    """Write a summary of the run log to ``reports/NAME.txt``."""
    path = write_report(name, datetime.now(UTC))
    logger.info("report %s written to %s", name, path)
    append_run("send_report", (name,), {}, task_id=_task_id(task), queue=huey.name)
    return str(path)


@huey.task(context=True)
def cleanup(days: float = 7, task: Task | None = None) -> list[str]:
    """Delete reports older than ``days`` days."""
    removed = delete_old_reports(days, datetime.now(UTC))
    logger.info("cleanup removed %d report(s) older than %s day(s)", len(removed), days)
    append_run("cleanup", (), {"days": days}, task_id=_task_id(task), queue=huey.name)
    return removed
